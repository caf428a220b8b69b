"""Setting a run up for the training loop: a new run, a resumed one, or one that starts from
another run's weights. Settings the user left open are chosen here (charrnn/autosize.py), and
everything that can be wrong is checked before the run directory is touched.

In a torchrun job every rank prepares the same run: rank 0 alone reads and writes the run
directory and decides what is left open (timing the device), and sends the others what it read
and decided; each rank then builds the same model and takes its share of the streams.
"""

from __future__ import annotations

import math
import shlex
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from charrnn import autosize, checkpoint, corpus as corpora, threads
from charrnn.batches import Streams, fit
from charrnn.config import SEEDS, ModelConfig, TrainConfig, flag
from charrnn.device import describe, pick_device
from charrnn.distributed import SINGLE, World
from charrnn.errors import CharrnnError
from charrnn.model import CharRNN
from charrnn.progress import Reporter
from charrnn.train import Setup, Trainer
from charrnn.vocab import Vocab

SIZE_FLAGS = ("layers", "hidden_size", "embedding_size", "dropout")
VALIDATION_BATCH = 64
# what a --resume may change: how long it goes on, and where; everything else is the run's
RESUME_CHANGES = ("epochs", "max_steps", "time", "device", "threads", "tensorboard")
REPEAT_CHANGES = ("device", "threads", "tensorboard")  # where a repeat runs, not what it does


def new(corpus_arg: str, out: Path | None, cfg: TrainConfig, model_cfg: dict | None = None, *,
        init_from: Path | None = None, overwrite: bool = False,
        reporter: Reporter | None = None, world: World = SINGLE,
        started: float | None = None, decided: tuple | None = None,
        digest: str | None = None) -> Trainer:
    """A new run on `corpus_arg`. `model_cfg` holds the model settings the user gave (`model`,
    and any of SIZE_FLAGS); the rest, and cfg's None settings, are chosen for the budget, which
    counts from `started` (time.monotonic(); by default, now). `decided` (cfg, model config,
    plan, choice) and `digest` (the corpus's) come from `repeat`."""
    started = time.monotonic() if started is None else started
    reporter = reporter or Reporter()
    given = dict(model_cfg or {})
    # the given sizes are checked now, before a corpus is read or a size timed
    ModelConfig(**{"vocab_size": 1, "layers": autosize.LAYERS,
                   "hidden_size": autosize.HIDDEN_SIZES[0], "embedding_size": autosize.EMBEDDING,
                   **given})
    if init_from is not None and set(given) - {"dropout"}:
        raise CharrnnError(f"--init-from keeps the network of {init_from}; only --dropout may be "
                           f"given with it, not {', '.join(flag(k) for k in sorted(given))}")
    if cfg.batch_size is not None:
        world.share(cfg.batch_size)  # a batch the ranks cannot share: every rank says so, first
    writes = world.writes
    run = _run_dir(out, overwrite) if writes else out
    if cfg.tensorboard:
        check_tensorboard()
    device = world.device if world.distributed else pick_device(cfg.device)
    cpu = threads.configure(cfg.threads)
    corpus = _load_corpus(corpus_arg, cfg, reporter, world=world, digest=digest,
                          run=decided and Path(decided[3]["repeats"]),
                          repeating=decided is not None)
    vocab = corpus.vocab
    base = None
    if init_from is not None:
        base, base_vocab, _ = checkpoint.load(init_from)
        vocab = Vocab(tuple(sorted(set(base_vocab.chars) | set(vocab.chars))))
        # the network is the base run's; only its dropout may be given anew
        given = {**base.config.to_dict(), **{k: v for k, v in given.items() if k == "dropout"}}
        given.pop("vocab_size")
    ids = _ids_for(corpus, vocab)
    train_ids, val_ids = _split(ids, cfg, reporter)

    if run is None:
        run = Path("runs") / corpus.name
        run = _run_dir(run, overwrite) if writes else run
    if decided is not None:
        cfg, mc, plan, choice = decided
    elif writes:
        cfg, mc, plan, choice = decide(cfg, given, len(vocab), len(train_ids), len(val_ids),
                                       device, reporter, world, started)
    if world.distributed:  # the others take what rank 0 decided (it may have timed the device)
        decided = world.broadcast_json({"train": asdict(cfg), "model": mc.to_dict(),
                                        "plan": plan and asdict(plan), "choice": choice}
                                       if writes else None)
        cfg, mc = TrainConfig.from_dict(decided["train"]), ModelConfig(**decided["model"])
        plan = decided["plan"] and autosize.Plan.from_dict(decided["plan"])
        choice = decided["choice"]
        if plan is not None and not plan.repeat:
            # the choice took N times one rank's speed; the steps follow the job's own, timed
            # with the gradients exchanged (and the same on every rank)
            speed = autosize.measure(device, mc, cfg.batch_size // world.size, cfg.seq_len,
                                     cfg.amp, world=world)
            plan = replace(autosize.plan(plan.seconds, speed, cfg, len(val_ids),
                                         time.monotonic() - started),
                           eval_chars=plan.eval_chars)
    created = not run.exists()
    lock = checkpoint.RunLock(run).__enter__() if writes else nullcontext()
    try:
        torch.manual_seed(cfg.seed)
        with _building(mc, device):
            if base is not None:
                model = extend_vocab(base, base_vocab, vocab, mc.dropout)
            else:
                model = CharRNN(mc)
            model = model.to(device)
        if world.rank:  # the same weights on every rank, but each its own dropout masks
            torch.manual_seed((cfg.seed + world.rank) % SEEDS)
        setup = _setup(run, cfg, model, vocab, corpus, device, train_ids, val_ids,
                       plan, choice, lock, None, reporter, world, cpu, started=started)
        # only now, with the new run built and checked, does the old one go: nothing of it may
        # mix with the new
        if writes:
            checkpoint.clear_run(run)
    except BaseException:
        lock.__exit__(None, None, None)
        if writes and created and all(p.name == checkpoint.LOCK for p in run.iterdir()):
            (run / checkpoint.LOCK).unlink(missing_ok=True)
            run.rmdir()  # leave no trace of a run that never started
        raise
    if base is not None:
        reporter.say(f"starting from the weights of {init_from}")
    if choice.get("reason"):
        reporter.say(f"chose {choice['reason']}")
    return Trainer(setup, reporter)


def repeat(source: Path, corpus_arg: str | None, out: Path | None, overrides: dict | None = None,
           *, overwrite: bool = False, reporter: Reporter | None = None,
           world: World = SINGLE, started: float | None = None) -> Trainer:
    """A new run that repeats `source` exactly: its model, its settings and seed, and its time
    budget as the steps it planned (and planned again), with no calibration and no clock; on
    the same text, which `corpus_arg` may name anew. Only where it runs may change
    (REPEAT_CHANGES)."""
    source = Path(source)
    refused = sorted(set(overrides or {}) - set(REPEAT_CHANGES))
    if refused:
        raise CharrnnError(f"--plan-from repeats {source} with its own settings; only "
                           f"{', '.join(flag(k) for k in REPEAT_CHANGES[:-1])} or "
                           f"{flag(REPEAT_CHANGES[-1])} can change, not "
                           f"{', '.join(flag(k) for k in refused)}")
    stored = checkpoint.read_config(source)
    mc, vocab = checkpoint.model_config(stored, source)
    try:
        cfg = TrainConfig.from_dict({**stored["train"], **(overrides or {})})
        plan = autosize.Plan.from_dict(stored["plan"]) if stored.get("plan") else None
    except (TypeError, KeyError, ValueError) as e:
        raise CharrnnError(f"{source / checkpoint.CONFIG} is corrupted ({e}); its plan cannot "
                           "be repeated") from None
    if not cfg.decided:
        raise CharrnnError(f"{source / checkpoint.CONFIG} is corrupted (its batch size, window "
                           "or learning rate is missing); its plan cannot be repeated")
    info = stored["corpus"]
    choice = {"reason": f"the plan of {source}, repeated", "chosen": [],
              "chars": (stored.get("choice") or {}).get("chars"), "repeats": str(source)}
    return new(corpus_arg or info.get("source") or info.get("path"), out, cfg,
               overwrite=overwrite, reporter=reporter, world=world, started=started,
               decided=(cfg, mc, plan and replace(plan, repeat=True), choice),
               digest=info.get("digest"))


def resume(run: Path, corpus_arg: str | None = None, overrides: dict | None = None,
           reporter: Reporter | None = None, world: World = SINGLE,
           started: float | None = None) -> Trainer:
    """Continue `run` where it stopped; `overrides` may change RESUME_CHANGES (raise its stops,
    move its device) and nothing else. A run saved by N processes continues on any number that
    divides its streams, exactly where it is the same number."""
    started = time.monotonic() if started is None else started
    reporter = reporter or Reporter()
    run = Path(run)
    refused = sorted(set(overrides or {}) - set(RESUME_CHANGES))
    if refused:
        raise CharrnnError(f"--resume continues {run} with its own settings; only "
                           f"{', '.join(flag(k) for k in RESUME_CHANGES[:-1])} or "
                           f"{flag(RESUME_CHANGES[-1])} can change, not "
                           f"{', '.join(flag(k) for k in refused)}")
    writes = world.writes
    stored = checkpoint.read_config(run) if writes else None
    if world.distributed:  # the other ranks may be on machines without the run's folder
        stored = checkpoint.check_config(world.broadcast_json(stored), run / checkpoint.CONFIG)
    lock = checkpoint.RunLock(run).__enter__() if writes else nullcontext()
    try:
        overrides = overrides or {}
        try:
            cfg = TrainConfig.from_dict({**stored["train"], **overrides})
            plan = (autosize.Plan.from_dict(stored["plan"]) if stored.get("plan") else None)
        except (TypeError, KeyError, ValueError) as e:
            raise CharrnnError(f"{run / checkpoint.CONFIG} is corrupted ({e}); "
                               "it cannot be resumed") from None
        if not cfg.decided:
            raise CharrnnError(f"{run / checkpoint.CONFIG} is corrupted (its batch size, window "
                               "or learning rate is missing); it cannot be resumed")
        if cfg.batch_size % world.size:
            raise CharrnnError(f"{run} trains a batch of {cfg.batch_size} streams, which "
                               f"{world.size} processes cannot share equally; resume it with a "
                               f"number of processes that divides {cfg.batch_size}")
        if cfg.tensorboard:
            check_tensorboard()
        mc, vocab = checkpoint.model_config(stored, run)
        # the state's size is checked against the config before it is read, and its weights
        # against the config before a model is built: a config claiming a huge model
        # allocates nothing
        limit = checkpoint.state_limit(mc, cfg.batch_size,
                                       cfg.eval_every or (plan.eval_every if plan else None))
        if world.distributed:
            data = world.broadcast_bytes(checkpoint.read_state_bytes(run, limit) if writes
                                         else None)
            state = checkpoint.load_state(run, limit, data)
        else:
            state = checkpoint.load_state(run, limit)
        where = run / checkpoint.LATEST
        checkpoint.check_shapes({k: tuple(v.shape) for k, v in state["model"].items()}, mc,
                                where)
        device = world.device if world.distributed else pick_device(cfg.device)
        # the threads it saved with, where they are free to choose: the same sums, so the
        # same losses
        saved_threads = state.get("threads")
        cpu = threads.configure(cfg.threads, prefer=saved_threads if isinstance(
            saved_threads, int) and not isinstance(saved_threads, bool) else None)
        saved = state.get("world_size", 1)
        if saved != world.size:
            reporter.warn(f"{run} was trained by {saved} process{'es' if saved != 1 else ''} "
                          f"and goes on with {world.size}: its {cfg.batch_size} streams are "
                          "divided anew, so it continues correctly but not bit for bit as it "
                          "would have")
        corpus = _resume_corpus(stored, corpus_arg, run, cfg, reporter, world)
        model = CharRNN(mc)
        checkpoint.load_weights_into(model, state["model"], where)
        ids = _ids_for(corpus, vocab)
        train_ids, val_ids = _split(ids, cfg, None)
        if "time" in overrides and writes:
            # a new budget, planned from the run's own speed (or, for a run that has none, the
            # one it was planned with, or one measured now) and its evaluation set
            speed = _measured_speed(stored)
            if speed is None and plan is not None:
                speed = autosize.Speed(plan.chars_per_sec, plan.eval_chars_per_sec)
            elif speed is None:
                speed = autosize.calibrate(device, mc, [mc.hidden_size], cfg.batch_size,
                                           cfg.seq_len, cfg.amp,
                                           autosize.calibration_budget(cfg.time),
                                           reporter.say)[mc.hidden_size]
            kept = plan.eval_chars if plan is not None else (cfg.eval_chars or
                                                             autosize.EVAL_CHARS)
            plan = replace(autosize.plan(cfg.time, speed, cfg, len(val_ids),
                                         time.monotonic() - started), eval_chars=kept)
        if "time" in overrides and world.distributed:
            plan = autosize.Plan.from_dict(world.broadcast_json(asdict(plan) if writes else None))
        setup = _setup(run, cfg, model.to(device), vocab, corpus, device, train_ids, val_ids,
                       plan, stored.get("choice") or {}, lock, state, None, world, cpu,
                       started=started, measured=_measured_speed(stored))
    except BaseException:
        lock.__exit__(None, None, None)
        raise
    return Trainer(setup, reporter)


def decide(cfg: TrainConfig, given: dict, vocab_size: int, train_chars: int, val_chars: int,
           device: torch.device, reporter: Reporter, world: World = SINGLE,
           started: float | None = None):
    """Every setting the user left open, for the budget: (cfg, model config, plan, choice). In a
    torchrun job, the device is timed on one rank's share of the batch, and the job's speed
    taken as that many times it (the gradients' exchange is timed later, for the plan), and the
    default batch is rounded up to a multiple of the ranks."""
    model = given.get("model", "lstm")
    given_sizes = {k: given[k] for k in SIZE_FLAGS if given.get(k) is not None}
    given_train = {k: getattr(cfg, k) for k in ("batch_size", "seq_len", "lr")
                   if getattr(cfg, k) is not None}
    default_batch = -(-autosize.BATCH_SIZE // world.size) * world.size  # one that they share
    # the batch and window that will train: a small corpus shrinks them (see _setup), and the
    # characters a budget holds, so the passes it makes (and the dropout), follow
    batch, seq, _ = fit(train_chars, given_train.get("batch_size", default_batch),
                        given_train.get("seq_len", autosize.SEQ_LEN))
    if world.distributed:
        batch = max(batch - batch % world.size, world.size)

    seconds = cfg.time_budget
    started = time.monotonic() if started is None else started
    # calibrating takes at most this long, in wall time, whatever the load
    deadline = time.perf_counter() + autosize.calibration_budget(seconds or 0.0)

    def timed(mc: ModelConfig, sizes: list[int], too_big=None):
        speeds = autosize.calibrate(device, mc, sizes, batch // world.size, seq, cfg.amp,
                                    deadline - time.perf_counter(), reporter.say,
                                    *([too_big] if too_big else []))
        return {h: replace(v, train=v.train * world.size, eval=v.eval * world.size)
                for h, v in speeds.items()}

    if seconds is None:  # a budget of steps or epochs: its characters are known already
        chars = [n for n in (cfg.max_steps and cfg.max_steps * batch * seq,
                             cfg.epochs and cfg.epochs * train_chars) if n]
        choice = autosize.choose(model=model, vocab_size=vocab_size, corpus_chars=train_chars,
                                 given_model=given_sizes, given_train=given_train,
                                 chars=int(min(chars)), batch_size=default_batch)
        speeds = None
    else:
        base = ModelConfig(vocab_size=vocab_size, model=model,
                           layers=given_sizes.get("layers", autosize.LAYERS),
                           hidden_size=given_sizes.get("hidden_size", autosize.HIDDEN_SIZES[0]),
                           embedding_size=given_sizes.get("embedding_size", autosize.EMBEDDING),
                           dropout=given_sizes.get("dropout", 0.0))
        sizes = ([base.hidden_size] if "hidden_size" in given_sizes
                 else list(autosize.HIDDEN_SIZES))
        def too_big(hidden: int, speed: autosize.Speed) -> bool:
            mc = ModelConfig(**{**base.to_dict(), "hidden_size": hidden})
            chars = speed.train * seconds * autosize.TRAIN_SHARE
            return not autosize.fits(autosize.parameters(mc), chars, train_chars)

        speeds = timed(base, sizes, too_big)
        choice = autosize.choose(model=model, vocab_size=vocab_size, corpus_chars=train_chars,
                                 given_model=given_sizes, given_train=given_train,
                                 seconds=seconds, speeds=speeds, where=describe(device),
                                 batch_size=default_batch)
    cfg = replace(cfg, **choice.train)
    mc = ModelConfig(vocab_size=vocab_size, model=model, **choice.model)
    plan = None
    if seconds is not None:
        speed = speeds[mc.hidden_size]
        if mc.dropout and not base.dropout:  # dropout was chosen: time the model as it will be
            speed = timed(mc, [mc.hidden_size]).get(mc.hidden_size, speed)
        plan = autosize.plan(seconds, speed, cfg, val_chars, time.monotonic() - started)
    record = {"reason": choice.reason if choice.chosen else "",
              "chosen": choice.chosen, "chars": choice.chars}
    return cfg, mc, plan, record


def extend_vocab(model: CharRNN, old: Vocab, new: Vocab, dropout: float) -> CharRNN:
    """A copy of `model` over vocabulary `new`: shared characters keep their rows."""
    mc = ModelConfig(**{**model.config.to_dict(), "vocab_size": len(new), "dropout": dropout})
    grown = CharRNN(mc)
    old_index = {ch: i for i, ch in enumerate(old.chars)}
    pairs = [(j, old_index[ch]) for j, ch in enumerate(new.chars) if ch in old_index]
    to_rows = torch.tensor([j for j, _ in pairs], dtype=torch.long)
    from_rows = torch.tensor([i for _, i in pairs], dtype=torch.long)
    with torch.no_grad():
        source = model.state_dict()
        for name, tensor in grown.state_dict().items():
            if name in ("embed.weight", "head.weight", "head.bias"):
                tensor[to_rows] = source[name][from_rows]
            else:
                tensor.copy_(source[name])
    return grown


# ---------------------------------------------------------------------------------------------


def _run_dir(out: Path | None, overwrite: bool) -> Path | None:
    """The run directory to write, checked: a new or empty folder, or (with --overwrite) an
    old run; never a folder of the user's other files. None: named after the corpus, later."""
    if out is None:
        return None
    if not str(out).strip():
        raise CharrnnError("--out is empty; give the folder to write the run to")
    run = Path(out)
    if checkpoint.is_run(run):
        if not overwrite:
            raise CharrnnError(f"{run} already holds a run; pass --resume "
                               f"{shlex.quote(str(run))} to continue it, --overwrite to replace "
                               "it, or --out elsewhere")
        return run
    if run.exists() and not run.is_dir():
        raise CharrnnError(f"--out {run} is a file; give a folder for the run")
    above = next((p for p in run.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise CharrnnError(f"--out {run} is inside {above}, which is a file; give a folder for "
                           "the run")
    if run.is_dir():
        names = {p.name for p in run.iterdir()}
        if checkpoint.CONFIG in names or (run / checkpoint.CONFIG).is_symlink():
            raise CharrnnError(f"--out {run} holds a {checkpoint.CONFIG} that is not a charrnn "
                               "run's (or is damaged), so it is not a run: nothing in it is "
                               "replaced; give a new or empty folder")
        # a run killed before its config.json was written is still a run, for --overwrite
        ours = all(checkpoint.made_by_run(n) for n in names)
        if names and not (overwrite and ours):
            raise CharrnnError(f"--out {run} is a folder of other files, not a charrnn run; "
                               "give a new or empty folder")
    return run


@contextmanager
def _building(mc: ModelConfig, device: torch.device):
    """A model too large for the device's memory is a clear error, not an allocator's."""
    try:
        yield
    except (MemoryError, RuntimeError) as e:
        if not isinstance(e, MemoryError) and "memory" not in str(e).lower() \
                and "alloc" not in str(e).lower():
            raise
        raise CharrnnError(f"a {mc.layers}x{mc.hidden_size} {mc.model} "
                           f"({checkpoint.parameter_count(mc):,} parameters) does not fit in the "
                           f"memory of {describe(device)}; choose a smaller --hidden-size or "
                           "--layers, or leave them out to have them chosen") from None


def _load_corpus(corpus_arg: str | None, cfg: TrainConfig, reporter: Reporter,
                 digest: str | None = None, run: Path | None = None,
                 world: World = SINGLE, repeating: bool = False) -> corpora.Corpus:
    """The corpus, encoded; with `digest` (the one `run` recorded: resumed, or `repeating` its
    plan), only if it is that same text."""
    how = "--plan-from" if repeating else "--resume"
    if not isinstance(corpus_arg, str) or not corpus_arg:
        raise CharrnnError(f"{run / checkpoint.CONFIG} names no corpus; give it: "
                           f"charrnn train CORPUS {how} {run}")
    try:
        with world.one_at_a_time(corpora.cache_dir()):
            corpus = corpora.load(corpus_arg, cfg.encoding, cfg.errors,
                                  sniff_binary=cfg.encoding == "utf-8", digest=digest,
                                  warn=reporter.warn, say=reporter.say, include=cfg.include,
                                  exclude=cfg.exclude)
    except corpora.DigestMismatch as e:
        if repeating:
            raise CharrnnError(f"{e.path} is not the text {run} trained on (or it changed "
                               "since), so its plan cannot be repeated exactly; give that "
                               "text") from None
        raise CharrnnError(f"{e.path} is not the text {run} trained on (it changed since, or "
                           "it is another file), so the run cannot resume exactly; give that "
                           "text, or start a new run") from None
    if len(corpus.ids) < 2:
        raise CharrnnError(f"corpus {corpus.path} has {len(corpus.ids)} character; charrnn "
                           "needs at least 2 to learn anything (give a longer text)")
    return corpus


def _resume_corpus(stored: dict, corpus_arg: str | None, run: Path, cfg: TrainConfig,
                   reporter: Reporter, world: World) -> corpora.Corpus:
    """The text a resumed run trained on. Given on the command line, it is the user's choice
    (built or fetched if need be, then checked). Taken from config.json, which may be anyone's,
    only a file already here is used, and only if it is that text: a folder is not read and
    built, nor a corpus fetched, on a config's word."""
    info = stored["corpus"]
    digest = info.get("digest")
    if corpus_arg:
        return _load_corpus(corpus_arg, cfg, reporter, digest=digest, run=run, world=world)
    source, path = info.get("source"), info.get("path")
    for candidate in (path, source):
        if isinstance(candidate, str) and candidate and Path(candidate).is_file() and \
                not Path(candidate).is_symlink():
            try:
                return _load_corpus(candidate, cfg, reporter, digest=digest, run=run,
                                    world=world)
            except CharrnnError:
                continue  # not that text: the next, or the line below
    named = source if isinstance(source, str) and source else path
    if not isinstance(named, str) or not named:
        raise CharrnnError(f"{run / checkpoint.CONFIG} names no corpus; give it: "
                           f"charrnn train CORPUS --resume {shlex.quote(str(run))}")
    raise CharrnnError(f"{run} trained on {named}, whose text is not here as it was (changed, "
                       "moved, or a folder or corpus not built on this machine); give it "
                       f"yourself to resume: charrnn train {shlex.quote(named)} --resume "
                       f"{shlex.quote(str(run))}")


def _ids_for(corpus: corpora.Corpus, vocab: Vocab) -> np.ndarray:
    """The corpus as ids of `vocab` (which, after --init-from, may be larger than its own)."""
    if vocab == corpus.vocab:
        return corpus.ids
    index = {ch: i for i, ch in enumerate(vocab.chars)}
    lut = np.array([index[ch] for ch in corpus.vocab.chars], dtype=np.int64)
    return lut[corpus.ids].astype(vocab.dtype)


def _split(ids: np.ndarray, cfg: TrainConfig, reporter: Reporter | None):
    train_ids, val_ids = corpora.split(ids, cfg.val_frac, cfg.test_frac)
    if len(val_ids) < 2 or len(train_ids) < 2:
        if cfg.val_frac > 0 and reporter is not None:
            reporter.warn("the corpus is too small for a validation split; "
                          "training and validating on all of it")
        train_ids = val_ids = ids
    return train_ids, val_ids


def check_tensorboard() -> None:
    """--tensorboard needs the optional extra; say so before anything is trained."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise CharrnnError("--tensorboard needs TensorBoard: pip install 'charrnn[tensorboard]' "
                           "(or leave out --tensorboard; metrics.jsonl has every figure)") from None


def _measured_speed(config: dict) -> autosize.Speed | None:
    """The speed a run measured of itself, as its config.json records it."""
    try:
        m = config["speed"]
        return autosize.Speed(autosize._number(m["train"]), autosize._number(m["eval"]))
    except (KeyError, TypeError, ValueError):
        return None


def _setup(run, cfg, model, vocab, corpus, device, train_ids, val_ids, plan, choice, lock,
           state, reporter, world: World = SINGLE, cpu: threads.Threads | None = None, *,
           started: float, measured: autosize.Speed | None = None) -> Setup:
    batch, seq, warning = fit(len(train_ids), cfg.batch_size, cfg.seq_len)
    if warning and reporter is not None:
        reporter.warn(warning)
    if warning and world.distributed:  # a batch shrunk for a small text: one the ranks share
        batch -= batch % world.size
        if not batch:
            raise CharrnnError(f"the training text ({len(train_ids):,} characters) is too small "
                               f"to divide among {world.size} processes; train it in one")
    train_streams = Streams(train_ids, batch, seq, world.share(batch)).to(device)
    stops = [n for n in (cfg.max_steps, plan and plan.steps,
                         cfg.epochs and math.ceil(cfg.epochs * train_streams.windows)) if n]
    total = max(min(stops), 1)
    if plan is not None:  # the plan says when to evaluate, and on how much
        eval_chars = plan.eval_chars
    else:  # a budget of steps or epochs: its evaluations are budgeted by characters
        eval_every, eval_chars = autosize.eval_settings(total, batch * seq, len(val_ids),
                                                        cfg.eval_every, cfg.eval_chars)
        cfg = replace(cfg, eval_every=eval_every, eval_chars=eval_chars)
    eval_ids = val_ids[:eval_chars]
    eb, et, _ = fit(len(eval_ids), VALIDATION_BATCH, seq)
    val_streams = Streams(eval_ids, eb, et, world.share(eb, equal=False)).to(device)
    return Setup(run=run, cfg=cfg, model=model, vocab=vocab, corpus=corpus, device=device,
                 train_streams=train_streams, val_streams=val_streams, total_steps=total,
                 plan=plan, choice=choice, lock=lock, resume_state=state, world=world,
                 threads=cpu or threads.Threads(1, 1, False, "as given"), started=started,
                 measured=measured)

