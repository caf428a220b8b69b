"""The Python API: what the command line does, from a notebook or a script. The command line is
built on it.

    import charrnn

    run = charrnn.train("corpus.txt", out="runs/corpus", time="2m")   # or charrnn.load(path)
    print(run.sample(300, temperature=0.8, seed=1))
    for ch in run.stream(1000, prime="ROMEO:"):
        print(ch, end="")
    ins = run.inspect("def f(x):\\n    return [x, (x + 1)]\\n")
    ins.probe("depth")          # every cell of every layer by |r| with bracket depth
    ins.ablate("1:17")          # the loss each character gains with cell 17 held at its mean
    ins                         # in a notebook: the painted page, as `--html` writes it
    run.eval()                  # the loss beside n-gram baselines and compressors
    run.sample(300, prime=open("mine.py").read(), adapt=True)   # in the style of the prime
    run.info()                  # what the run is, its plan and speed, its loss curves

Settings go by their field names, as the command line's options say them with dashes
(`hidden_size=` for `--hidden-size`). Errors are raised as CharrnnError with the one line the
command line prints; nothing is printed unless `progress=True`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from charrnn import checkpoint, threads
from charrnn.config import (
    LANGUAGES,
    InspectConfig,
    ModelConfig,
    SampleConfig,
    TrainConfig,
    check_device,
)
from charrnn.errors import CharrnnError, describe_os_error
from charrnn.interp.inspection import Inspection
from charrnn.model import CharRNN
from charrnn.vocab import Vocab


def train(corpus: str | Path | None = None, *, out: str | Path | None = None,
          resume: str | Path | None = None, init_from: str | Path | None = None,
          plan_from: str | Path | None = None, overwrite: bool = False,
          progress: bool = False, **settings) -> Run:
    """Train a run, as `charrnn train` does, and return it (its best model). `corpus`: a text
    file, a folder or a corpus name; `resume`, `init_from`, `plan_from`: a run to continue, to
    start from, or to repeat. `settings`: any option of `charrnn train` by its field name
    (`time="2m"`, `hidden_size=256`, `max_steps=500`, `seed=1`...)."""
    from charrnn.training.progress import quiet_reporter, reporter_for

    _check("progress", progress, (bool,), "True or False")
    with _said():
        outcome = trainer(corpus, out=out, resume=resume, init_from=init_from,
                          plan_from=plan_from, overwrite=overwrite,
                          reporter=reporter_for() if progress else quiet_reporter(),
                          **settings).run_loop()
    if outcome.stopped_by == "interrupted":
        raise KeyboardInterrupt(f"interrupted at step {outcome.step}; resume with "
                                f"charrnn.train(resume={str(outcome.run)!r})")
    return load(outcome.run)


def trainer(corpus: str | Path | None = None, *, out: str | Path | None = None,
            resume: str | Path | None = None, init_from: str | Path | None = None,
            plan_from: str | Path | None = None, overwrite: bool = False, reporter=None,
            world=None, started: float | None = None, **settings):
    """A run set up to train (charrnn.training.loop.Trainer; `.run_loop()` trains it): new,
    resumed, from another run's weights or repeating another's plan. The one way a run is set
    up: `charrnn train` comes through here too, with its display (`reporter`), its place in a
    torchrun job (`world`) and the moment the command began (`started`, which a time budget
    counts from). `settings` by field name, as `train` takes them."""
    from charrnn.engine.distributed import SINGLE
    from charrnn.training import prepare

    world = world or SINGLE
    _check("overwrite", overwrite, (bool,), "True or False")
    corpus, out = _text(corpus), _path(out, "out")
    resume, init_from = _path(resume, "resume"), _path(init_from, "init_from")
    plan_from = _path(plan_from, "plan_from")
    model_settings, train_settings = split_settings(settings)
    changes = {**model_settings, **train_settings}
    starts = [name for name, v in (("--resume", resume), ("--init-from", init_from),
                                   ("--plan-from", plan_from)) if v is not None]
    if len(starts) > 1:
        raise CharrnnError(f"{' and '.join(starts)} do not go together; choose one")
    if plan_from is not None:
        return prepare.repeat(plan_from, corpus, out, changes,
                              overwrite=overwrite, reporter=reporter, world=world,
                              started=started)
    if resume is not None:
        if out is not None and out != resume:
            raise CharrnnError("--resume continues a run in its own directory; leave out --out")
        if overwrite:
            changes["overwrite"] = True  # (refused, in the words of a resume)
        return prepare.resume(resume, corpus, changes, reporter, world,
                              started=started)
    if corpus is None:
        raise CharrnnError("give a CORPUS to train on (a text file, a folder, or a corpus "
                           "name: see `charrnn corpus list`), or --resume RUN")
    return prepare.new(corpus, out, TrainConfig(**train_settings),
                       model_settings, init_from=init_from, overwrite=overwrite,
                       reporter=reporter, world=world, started=started)


def load(path: str | Path, device: str | torch.device = "cpu") -> Run:
    """A run written by `charrnn train`: its best model (eval mode), vocabulary and config."""
    path = _path(path, "path")
    _check("device", device, (str, torch.device), "a device (cpu, cuda, cuda:N, mps)")
    if isinstance(device, str) and (device == "auto" or not check_device(device)):
        raise CharrnnError(f"device must be cpu, cuda, cuda:N or mps, not {device!r}")
    with _said():
        model, vocab, config = checkpoint.load(path, device)
    return Run(path, model, vocab, config)


def split_settings(settings: dict) -> tuple[dict, dict]:
    """(the model's, the training's) of `settings` given by field name; a text value of a
    setting that parses one (time="2m", threads="auto") is parsed as the option would be."""
    model_names = {f.name for f in fields(ModelConfig)} - {"vocab_size"}
    train_fields = {f.name: f for f in fields(TrainConfig)}
    unknown = sorted(set(settings) - model_names - set(train_fields))
    if unknown:
        raise CharrnnError(f"unknown setting {', '.join(unknown)}; the settings are "
                           f"{', '.join(sorted(model_names | set(train_fields)))}")
    model = {k: v for k, v in settings.items() if k in model_names}
    train = {}
    for k, v in settings.items():
        if k in train_fields:
            parse = train_fields[k].metadata.get("parse")
            train[k] = parse(v) if parse and isinstance(v, str) else v
    return model, train


def _path(value, name: str = "a path") -> Path | None:
    _check(name, value, (str, Path, type(None)), "a path (str or Path)")
    return None if value is None else Path(value)


def _text(value, name: str = "corpus") -> str | None:
    _check(name, value, (str, Path, type(None)), "a path or a corpus name (str or Path)")
    return None if value is None else str(value)


def _check(name: str, value, kinds: tuple, words: str) -> None:
    """An argument of the API's own (the settings check theirs: charrnn/config.py) is of its
    type, or one line naming it, as the command line would say it."""
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise CharrnnError(f"{name} must be {words}, not {value!r}")


@contextmanager
def _said():
    """An operating system's error (a folder that cannot be made, a file that cannot be read)
    as the command line's one line, a CharrnnError."""
    try:
        yield
    except OSError as e:
        raise CharrnnError(describe_os_error(e)) from None


@dataclass
class Run:
    """A trained run: what sample, inspect, eval and info answer about."""

    path: Path
    model: CharRNN
    vocab: Vocab
    config: dict = field(repr=False)

    def stream(self, length: int = 1000, *, prime: str = "", temperature: float = 0.8,
               top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
               stop: str | None = None, adapt: bool = False, mix: bool = False,
               beam: int | None = None) -> Iterator[str]:
        """Yield the characters of a sample as they are drawn (not the prime), ending at
        `length` or once `stop` is written. `adapt`: learn from the prime first, the network as
        `eval`'s adapting row does (its weights on disk are unchanged), and draw from it mixed
        with the prime's own counts; `mix`: mixed with the counts of the training text too.
        `beam`: the likeliest continuation found by a beam of that many texts, not a draw (the
        same every time: `temperature`, `top_k`, `top_p` and `seed` do not apply; 1 is the
        greedy text, temperature 0's)."""
        threads.configure()
        return self.characters(length, prime=prime, temperature=temperature, top_k=top_k,
                               top_p=top_p, seed=seed, stop=stop, adapt=adapt, mix=mix,
                               beam=beam)

    def characters(self, length: int = 1000, *, prime: str = "", temperature: float = 0.8,
                   top_k: int | None = None, top_p: float | None = None,
                   seed: int | None = None, stop: str | None = None, adapt: bool = False,
                   mix: bool = False, beam: int | None = None) -> Iterator[str]:
        """`stream`, on the CPU threads as they are: for a caller that sets them itself
        (charrnn serve, whose workers each make one request's text on one thread)."""
        from charrnn.beam import MAX_BEAM, beam_search
        from charrnn.sample import check_prime, generate, seeded, until

        cfg = SampleConfig(temperature=temperature, top_k=top_k, top_p=top_p, length=length,
                           seed=seed)
        _check("prime", prime, (str,), "text (a str)")
        _check("stop", stop, (str, type(None)), "text (a str) or None")
        _check("adapt", adapt, (bool,), "True or False")
        _check("mix", mix, (bool,), "True or False")
        _check("beam", beam, (int, type(None)), "a whole number or None")
        if beam is not None and not 1 <= beam <= MAX_BEAM:
            raise CharrnnError(f"beam must be from 1 to {MAX_BEAM}, not {beam}")
        if beam is not None and (top_k is not None or top_p is not None):
            raise CharrnnError("beam finds the likeliest text; top_k and top_p are for drawing "
                               "samples and do not go with it")
        prime = check_prime(prime, self.vocab, drop_unknown=False)
        model, mixer = self.sampler(prime, adapt, mix)
        if beam is not None:
            return beam_search(model, self.vocab, prime, beam, cfg.length, stop, mixer)
        return until(stop, generate(model, self.vocab, prime, cfg, seeded(cfg.seed),
                                    mixer=mixer))

    def sample(self, length: int = 1000, **kw) -> str:
        """A sample as one string (the prime, if any, not included): see `stream`."""
        return "".join(self.stream(length, **kw))

    def sampler(self, prime: str, adapt: bool = False, mix: bool = False, say=None,
                warn=None):
        """(the network to sample from, the mixer or None) for `stream`'s `adapt` and `mix`
        (`warn`: where a mixture that cannot be had is said; by default, a Python warning)."""
        from charrnn.adapt import learn

        model, ids = self.model, None
        if adapt:
            if not prime:
                raise CharrnnError("--adapt learns from the prime, and there is none; give "
                                   "--prime or --prime-file")
            ids = self.vocab.encode(prime).astype(np.int64)
            model = learn(self.model, ids)
        if not (adapt or mix):
            return model, None
        from charrnn.evaluation import mixing

        if warn is None:
            import warnings

            warn = lambda line: warnings.warn(line, stacklevel=3)  # noqa: E731
        return model, mixing.mixer(self.model, self.config, self.vocab, ids, mix, say, warn)

    def inspect(self, text: str | None = None, *, text_file: str | Path | None = None,
                prime: str | None = None, length: int = 1000, offset: int = 0,
                temperature: float = 0.8, seed: int | None = None,
                max_memory: int | str = "2G", ask: InspectConfig | None = None
                ) -> RunInspection:
        """One pass of a text through the model, every state of every cell kept (numpy
        arrays in `.states`): `text`, or `text_file`, or `prime` and the model's continuation
        of it, or (with none) a stretch of the run's validation text. `ask` (inspect-cells'
        questions) adds what it asks for: the ablation, the sparse feature, the match."""
        from charrnn.config import parse_size
        from charrnn.interp import ablation, inspection

        _check("text", text, (str, type(None)), "text (a str) or None")
        _check("prime", prime, (str, type(None)), "text (a str) or None")
        for name, value in (("length", length), ("offset", offset)):
            _check(name, value, (int,), "a whole number")
        _check("max_memory", max_memory, (int, str), "a size in bytes, or like '512M' or '4G'")
        _check("ask", ask, (InspectConfig, type(None)), "an InspectConfig or None")
        limit = parse_size(max_memory) if isinstance(max_memory, str) else max_memory
        if limit < 1:
            raise CharrnnError(f"max_memory must be a size of 1 byte or more, like '512M' or "
                               f"'4G', not {max_memory!r}")
        text_file = _path(text_file, "text_file")
        mc = self.model.config
        held = (ablation.parse(ask.ablate, mc.layers, mc.hidden_size)  # a mistake: said first
                if ask is not None and ask.ablate is not None else None)
        if text is None:
            drawing = SampleConfig(temperature=temperature, seed=seed, length=max(length, 0))
            inspection.check_stretch(length, offset, prime)
            with _said():
                text = inspection.text_to_inspect(self.model, self.vocab, self.config,
                                                  text_file, prime, length, offset, drawing,
                                                  limit)
        inspection.check_memory(mc, len(text), limit)
        ins = inspection.inspect(self.model, self.vocab, text)
        ins = RunInspection(**{f.name: getattr(ins, f.name) for f in fields(Inspection)},
                            run=self)
        if ask is not None:
            ins.answer(ask, held)
        return ins

    def eval(self, text_file: str | Path | None = None, adapt: bool = True) -> dict:
        """The loss on `text_file` (by default the run's validation text) beside the baselines,
        as `charrnn eval` shows it: {"rows": [{"name", "about", "nats", "bits", "perplexity",
        "adapts", "uses_training_text"}...]...}. `adapt`: with the rows that learn from the
        text as they read it."""
        from charrnn.evaluation import evaluate

        text_file = _path(text_file, "text_file")
        _check("adapt", adapt, (bool,), "True or False")
        threads.configure()
        with _said():
            result = evaluate.evaluate(self.path, text_file, adapting=adapt)
        result.pop("per_char")
        return result

    def info(self) -> dict:
        """What `charrnn info` says of the run, as plain values (its loss curves included)."""
        from charrnn.evaluation import info

        return info.gather(self.path)


@dataclass
class RunInspection(Inspection):
    """An inspection that knows its run's model, so it can answer the questions that run the
    model again (ablation, match), and shows itself in a notebook."""

    run: Run | None = field(default=None, repr=False)

    def probe(self, name: str, state: str | None = None, top: int = 10,
              lang: str | None = None) -> dict:
        """The cells of every layer ranked by |r| with a probe (a name of `--list-probes`, or
        `regex:PATTERN`), and what each layer knows of it: {"cells": [(layer, cell, r)...],
        "layers": [layerprobe.LayerScore...]}."""
        from charrnn.interp import views

        _check("name", name, (str,), "a probe's name (see --list-probes) or 'regex:PATTERN'")
        _check("state", state, (str, type(None)), "a state's name or None")
        _check("top", top, (int,), "a whole number")
        if top < 1:
            raise CharrnnError(f"top must be 1 or more, not {top}")
        if lang is not None and lang not in LANGUAGES:
            raise CharrnnError(f"lang must be {', '.join(LANGUAGES[:-1])} or {LANGUAGES[-1]} "
                               f"(or None: detected from the text), not {lang!r}")
        return views.probe_answer(self, name, state, top, lang)

    def ablate(self, cells: str) -> np.ndarray:
        """The rise of each predicted character's loss (characters 1 .. N - 1), in nats, with
        `cells` ("LAYER:CELL,...") held at their mean over the text."""
        from charrnn.interp import ablation

        _check("cells", cells, (str,), "text like '1:17,2:230'")
        mc = self.run.model.config
        held = ablation.parse(cells, mc.layers, mc.hidden_size)
        return ablation.ablate(self.run.model, self.vocab, self.text, held)

    def match(self, phrase: str, state: str | None = None) -> list:
        """LSTMVis's match: the stretches of the text whose activity, on the cells most active
        on `phrase`, is closest to the phrase's (match.Match: start, distance)."""
        from charrnn.interp import inspection, match
        from charrnn.interp.inspection import default_state

        _check("phrase", phrase, (str,), "text (a str)")
        state = state or default_state(self.model)
        own = inspection.inspect(self.run.model, self.vocab, phrase)
        _, found = match.find(own.columns(state), self.columns(state))
        return found

    def answer(self, ask: InspectConfig, held: dict | None = None) -> None:
        """Run what `ask` needs beside the pass: the ablation of `held` cells, the sparse
        feature `charrnn features` learned, the --match phrase's own pass."""
        from charrnn.interp import ablation, features, inspection

        mc = self.run.model.config
        if held:
            self.ablation = (ask.ablate, ablation.ablate(self.run.model, self.vocab, self.text,
                                                         held))
        if ask.feature is not None:
            layer, state = ask.layer or mc.layers, ask.state or "h"
            self.check(state, layer)
            d = features.load(features.path_of(self.run.path, layer, state), mc.hidden_size)
            if not 0 <= ask.feature < d.w_enc.shape[0]:
                raise CharrnnError(f"--feature {ask.feature} does not exist: features are "
                                   f"numbered 0 to {d.w_enc.shape[0] - 1}")
            acts = d.encode(self.states[state][layer - 1])[:, ask.feature]
            self.feature = (f"feature {ask.feature} of layer {layer} ({state})", acts)
        if ask.match:
            if len(ask.match) < 2:
                raise CharrnnError("--match needs a phrase of 2 characters or more")
            self.matching = inspection.inspect(self.run.model, self.vocab, ask.match)

    def _repr_html_(self) -> str:
        from charrnn.interp import views

        return views.html(f"charrnn inspect-cells {self.run.path if self.run else ''}",
                          views.build(self, InspectConfig()), self)
