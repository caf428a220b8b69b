"""Setting a run up for the training loop: a new run, a resumed one, one that starts from
another run's weights, or one that repeats another's plan. Settings the user left open are
decided here (charrnn/budget/decide.py), and everything that can be wrong is checked before
the run directory is touched.

In a torchrun job every rank prepares the same run: rank 0 alone reads and writes the run
directory and decides what is left open (timing the device), and sends the others what it read
and decided; each rank then builds the same model and takes its share of the streams.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from charrnn import checkpoint, rundir, threads
from charrnn.budget import calibrate, decide, rule
from charrnn.budget.plan import EVAL_CHARS, Plan, eval_settings, first_plan
from charrnn.budget.speed import Speed, speed_value
from charrnn.config import SEEDS, ModelConfig, TrainConfig, flag
from charrnn.data.corpus import Corpus
from charrnn.device import pick_device
from charrnn.engine.distributed import SINGLE, World
from charrnn.engine.step import memory_checked
from charrnn.engine.streams import Streams, fit_batch, spread
from charrnn.errors import CharrnnError
from charrnn.model import CharRNN
from charrnn.training import text
from charrnn.training.board import check_installed
from charrnn.training.loop import Setup, Trainer
from charrnn.training.progress import Reporter
from charrnn.vocab import Vocab

VALIDATION_BATCH = 64
# what a --resume may change: how long it goes on, and where; everything else is the run's
RESUME_CHANGES = ("epochs", "max_steps", "time", "device", "threads", "tensorboard")
REPEAT_CHANGES = ("device", "threads", "tensorboard")  # where a repeat runs, not what it does
REPEAT_SLACK = 2.0  # a repeated plan's steps at its recorded speeds: within twice its budget


@dataclass
class Start:
    """What every way of starting a run shares: where, who says so, on what, since when."""

    run: Path | None
    reporter: Reporter
    world: World
    started: float  # time.monotonic() when the command began: a time budget counts from it
    device: torch.device | None = None
    cpu: threads.Threads | None = None  # the CPU threads, as charrnn/threads.py decided


@dataclass
class Text:
    """The corpus a run trains on, in its vocabulary, split."""

    corpus: Corpus
    vocab: Vocab
    train: np.ndarray
    val: np.ndarray


@dataclass
class Decided:
    """Every setting of a run: what the user gave, and what was chosen for the rest."""

    cfg: TrainConfig
    model: ModelConfig
    plan: Plan | None
    choice: dict  # what was chosen and why, recorded in config.json


def new(corpus_arg: str | Corpus, out: Path | None, cfg: TrainConfig,
        model_cfg: dict | None = None, *, init_from: Path | None = None,
        overwrite: bool = False, reporter: Reporter | None = None, world: World = SINGLE,
        started: float | None = None, decided: Decided | None = None) -> Trainer:
    """A new run on `corpus_arg` (named by the user, or already read: a repeat's). `model_cfg`
    holds the model settings the user gave (`model`, and any of decide.SIZE_FLAGS); the rest,
    and cfg's None settings, are chosen for the budget, which counts from `started`
    (time.monotonic(); by default, now). `decided` comes from `repeat`."""
    given = _check_given(dict(model_cfg or {}), cfg, init_from, world)
    start = _start(out, overwrite, cfg, reporter, world, started)
    corpus = (corpus_arg if isinstance(corpus_arg, Corpus) else
              text.load(corpus_arg, cfg, start.reporter, world=world))
    base = base_vocab = None
    vocab = corpus.vocab
    if init_from is not None:  # the network is the base run's; only its dropout may be anew
        base, base_vocab, _ = checkpoint.load(init_from)
        vocab = Vocab(tuple(sorted(set(base_vocab.chars) | set(vocab.chars))))
        given = {**base.config.to_dict(), **{k: v for k, v in given.items() if k == "dropout"}}
        given.pop("vocab_size")
    ids = text.ids_for(corpus, vocab)
    words = Text(corpus, vocab, *text.split(ids, cfg, start.reporter))
    if start.run is None:
        start.run = Path("runs") / corpus.name
        start.run = rundir.check_out(start.run, overwrite) if world.is_writer else start.run
    decided = _decide(decided, cfg, given, words, start)
    with _new_run_directory(start) as lock:
        torch.manual_seed(decided.cfg.seed)
        with memory_checked(decided.model, start.device):
            model = (extend_vocab(base, base_vocab, vocab, decided.model.dropout)
                     if base is not None else CharRNN(decided.model)).to(start.device)
        if world.rank:  # the same weights on every rank, but each its own dropout masks
            torch.manual_seed((decided.cfg.seed + world.rank) % SEEDS)
        setup = _build(start, decided, words, model, lock)
        # only now, with the new run built and checked, does the old one go: nothing of it may
        # mix with the new
        if world.is_writer:
            rundir.clear_run(start.run)
    if base is not None:
        start.reporter.say(f"starting from the weights of {init_from}")
    if decided.choice.get("reason"):
        start.reporter.say(f"chose {decided.choice['reason']}")
    return Trainer(setup, start.reporter)


def repeat(source: Path, corpus_arg: str | None, out: Path | None, overrides: dict | None = None,
           *, overwrite: bool = False, reporter: Reporter | None = None,
           world: World = SINGLE, started: float | None = None) -> Trainer:
    """A new run that repeats `source` exactly: its model, its settings and seed, and its time
    budget as the steps it planned (and planned again), with no calibration and no clock; on
    the same text, which `corpus_arg` may name anew. Only where it runs may change
    (REPEAT_CHANGES)."""
    source = Path(source)
    _refuse_changes(overrides, REPEAT_CHANGES, f"--plan-from repeats {source}")
    stored = checkpoint.read_config(source)
    mc, _ = checkpoint.model_config(stored, source)
    cfg, plan = _stored_settings(stored, overrides, source / checkpoint.CONFIG,
                                 "its plan cannot be repeated")
    _check_repeatable(plan, cfg, source)
    choice = {"reason": f"the plan of {source}, repeated", "chosen": [],
              "chars": _recorded_chars(stored), "repeats": str(source)}
    start = reporter or Reporter()
    corpus = text.recorded(stored, corpus_arg, source, cfg, start, world, repeating=True)
    return new(corpus, out, cfg, overwrite=overwrite, reporter=start, world=world,
               started=started, decided=Decided(cfg, mc, plan and replace(plan, repeat=True),
                                                choice))


def resume(run: Path, corpus_arg: str | None = None, overrides: dict | None = None,
           reporter: Reporter | None = None, world: World = SINGLE,
           started: float | None = None) -> Trainer:
    """Continue `run` where it stopped; `overrides` may change RESUME_CHANGES (raise its stops,
    move its device) and nothing else. A run saved by N processes continues on any number that
    divides its streams, exactly where it is the same number."""
    run, overrides = Path(run), overrides or {}
    _refuse_changes(overrides, RESUME_CHANGES, f"--resume continues {run}")
    stored = checkpoint.read_config(run) if world.is_writer else None
    if world.distributed:  # the other ranks may be on machines without the run's folder
        stored = checkpoint.check_config(world.broadcast_json(stored), run / checkpoint.CONFIG)
    start = Start(run, reporter or Reporter(), world,
                  time.monotonic() if started is None else started)
    lock = (rundir.RunLock(run) if world.is_writer else rundir.NoLock()).acquire()
    try:
        cfg, plan = _stored_settings(stored, overrides, run / checkpoint.CONFIG,
                                     "it cannot be resumed")
        if cfg.batch_size % world.size:
            raise CharrnnError(f"{run} trains a batch of {cfg.batch_size} streams, which "
                               f"{world.size} processes cannot share equally; resume it with a "
                               f"number of processes that divides {cfg.batch_size}")
        if cfg.tensorboard:
            check_installed()
        mc, vocab = checkpoint.model_config(stored, run)
        state = _stored_state(run, mc, cfg, plan, world)
        start.device = world.device if world.distributed else pick_device(cfg.device)
        # the threads it saved with, where they are free to choose: the same sums, so the
        # same losses
        saved = state.get("threads")
        start.cpu = threads.configure(cfg.threads, prefer=saved if isinstance(saved, int) and
                                      not isinstance(saved, bool) else None)
        _say_new_world(start, cfg, state.get("world_size", 1))
        corpus = text.recorded(stored, corpus_arg, run, cfg, start.reporter, world)
        model = CharRNN(mc)
        checkpoint.load_weights_into(model, state["model"], run / checkpoint.LATEST)
        words = Text(corpus, vocab, *text.split(text.ids_for(corpus, vocab), cfg))
        if "time" in overrides:
            plan = _replanned(stored, plan, cfg, mc, words, start)
        decided = Decided(cfg, mc, plan, stored.get("choice") or {})
        setup = _build(start, decided, words, model.to(start.device), lock, state,
                       measured_speed(stored))
    except BaseException:
        lock.release()
        raise
    return Trainer(setup, start.reporter)


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


def measured_speed(config: dict) -> Speed | None:
    """The speed a run measured of itself, as its config.json records it."""
    try:
        m = config["speed"]
        return Speed(speed_value(m["train"]), speed_value(m["eval"]))
    except (KeyError, TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------


def _check_given(given: dict, cfg: TrainConfig, init_from: Path | None, world: World) -> dict:
    """The sizes given, checked now, before a corpus is read or a size timed."""
    ModelConfig(**{"vocab_size": 1, "layers": rule.LAYERS, "hidden_size": rule.HIDDEN_SIZES[0],
                   "embedding_size": rule.EMBEDDING, **given})
    if init_from is not None and set(given) - {"dropout"}:
        raise CharrnnError(f"--init-from keeps the network of {init_from}; only --dropout may be "
                           f"given with it, not {', '.join(flag(k) for k in sorted(given))}")
    if cfg.batch_size is not None:
        world.share(cfg.batch_size)  # a batch the ranks cannot share: every rank says so, first
    return given


def _start(out: Path | None, overwrite: bool, cfg: TrainConfig, reporter: Reporter | None,
           world: World, started: float | None) -> Start:
    run = rundir.check_out(out, overwrite) if world.is_writer else out
    if cfg.tensorboard:
        check_installed()
    device = world.device if world.distributed else pick_device(cfg.device)
    return Start(run, reporter or Reporter(), world,
                 time.monotonic() if started is None else started, device,
                 threads.configure(cfg.threads))


def _decide(decided: Decided | None, cfg: TrainConfig, given: dict, words: Text,
            start: Start) -> Decided:
    """What rank 0 decides (or a repeat brings), the same on every rank."""
    world = start.world
    if decided is None and world.is_writer:
        decided = Decided(*decide.decide(cfg, given, len(words.vocab), len(words.train),
                                         len(words.val), start.device, start.reporter.say, world,
                                         start.started))
    if not world.distributed:
        return decided
    d = world.broadcast_json({"train": asdict(decided.cfg), "model": decided.model.to_dict(),
                              "plan": decided.plan and decided.plan.to_dict(),
                              "choice": decided.choice} if world.is_writer else None)
    cfg, mc = TrainConfig.from_dict(d["train"]), ModelConfig(**d["model"])
    plan = d["plan"] and Plan.from_dict(d["plan"])
    if plan is not None and not plan.repeat:
        plan = decide.job_plan(plan, start.device, mc, cfg, len(words.val), world, start.started)
    return Decided(cfg, mc, plan, d["choice"])


@contextmanager
def _new_run_directory(start: Start):
    """The run directory locked for the new run (rank 0's); if the run never starts, it leaves
    no trace."""
    writer = start.world.is_writer
    created = writer and not start.run.exists()
    lock = (rundir.RunLock(start.run) if writer else rundir.NoLock()).acquire()
    try:
        yield lock
    except BaseException:
        lock.release()
        if created and all(p.name == checkpoint.LOCK for p in start.run.iterdir()):
            (start.run / checkpoint.LOCK).unlink(missing_ok=True)
            start.run.rmdir()
        raise


def _refuse_changes(overrides: dict | None, allowed: tuple[str, ...], doing: str) -> None:
    refused = sorted(set(overrides or {}) - set(allowed))
    if refused:
        raise CharrnnError(f"{doing} with its own settings; only "
                           f"{', '.join(flag(k) for k in allowed[:-1])} or {flag(allowed[-1])} "
                           f"can change, not {', '.join(flag(k) for k in refused)}")


def _stored_settings(stored: dict, overrides: dict | None, where: Path, then: str):
    """(cfg, plan) of a config.json, with `overrides`; damage is one line ending `then`."""
    for key in ("plan", "choice"):
        if not isinstance(stored.get(key), (dict, type(None))):
            raise CharrnnError(f"{where} is corrupted (its {key} is not a JSON object); {then}")
    try:
        # (a run stored before eval_from existed validated on the start of its text)
        cfg = TrainConfig.from_dict({"eval_from": "start", **stored["train"], **(overrides or {})})
        plan = Plan.from_dict(stored["plan"]) if stored.get("plan") else None
    except CharrnnError as e:
        raise CharrnnError(f"{where} is invalid: {e}; {then}") from None
    except (TypeError, KeyError, ValueError) as e:
        raise CharrnnError(f"{where} is corrupted ({e}); {then}") from None
    if not cfg.decided:
        raise CharrnnError(f"{where} is corrupted (its batch size, window or learning rate is "
                           f"missing); {then}")
    return cfg, plan


def _check_repeatable(plan: Plan | None, cfg: TrainConfig, source: Path) -> None:
    """A plan that a stranger's config.json may hold: its steps must fit its budget at the
    speeds it records (a plan of 10**12 steps for 6 s would train for ever, with no clock to
    stop it: a repeat follows its steps)."""
    if plan is None:
        return
    fastest = max([plan.chars_per_sec, *(r.chars_per_sec for r in plan.replans)])
    seconds = plan.end * cfg.batch_size * cfg.seq_len / fastest
    if seconds > REPEAT_SLACK * plan.seconds:
        raise CharrnnError(f"{source / checkpoint.CONFIG} is invalid: its plan of "
                           f"{plan.end:,} steps would take {seconds:,.0f} s at the fastest speed "
                           f"it records, not the {plan.seconds:g} s budget it was planned for; "
                           "its plan cannot be repeated")


def _recorded_chars(stored: dict) -> int | None:
    """The characters the model was chosen for, as a run's choice records them."""
    chars = (stored.get("choice") or {}).get("chars")
    return chars if isinstance(chars, int) and not isinstance(chars, bool) else None


def _stored_state(run: Path, mc: ModelConfig, cfg: TrainConfig, plan, world: World) -> dict:
    """latest.pt, its size checked against the config before it is read and its weights
    before a model is built: a config claiming a huge model allocates nothing. Under torchrun
    rank 0 reads it and sends its bytes."""
    limit = checkpoint.state_limit(mc, cfg.batch_size,
                                   cfg.eval_every or (plan.eval_every if plan else None))
    if world.distributed:
        data = world.broadcast_bytes(checkpoint.read_state_bytes(run, limit)
                                     if world.is_writer else None)
        state = checkpoint.load_state(run, limit, data)
    else:
        state = checkpoint.load_state(run, limit)
    checkpoint.check_shapes({k: tuple(v.shape) for k, v in state["model"].items()}, mc,
                            run / checkpoint.LATEST)
    return state


def _say_new_world(start: Start, cfg: TrainConfig, saved: int) -> None:
    size = start.world.size
    if saved != size:
        start.reporter.warn(f"{start.run} was trained by {saved} process"
                            f"{'es' if saved != 1 else ''} and goes on with {size}: its "
                            f"{cfg.batch_size} streams are divided anew, so it continues "
                            "correctly but not bit for bit as it would have")


def _replanned(stored: dict, plan, cfg: TrainConfig, mc: ModelConfig, words: Text,
               start: Start) -> Plan:
    """A new --time for a resumed run, planned from the run's own speed (or, for a run that
    has none, the one it was planned with, or one measured now) and its evaluation set."""
    if start.world.is_writer:
        speed = measured_speed(stored)
        if speed is None and plan is not None:
            speed = Speed(plan.chars_per_sec, plan.eval_chars_per_sec)
        elif speed is None:
            speed = calibrate.calibrate(start.device, mc, [mc.hidden_size], cfg.batch_size,
                                        cfg.seq_len, cfg.amp, calibrate.calibration_budget(
                                            cfg.time), start.reporter.say)[mc.hidden_size]
        kept = plan.eval_chars if plan is not None else cfg.eval_chars or EVAL_CHARS
        plan = replace(first_plan(cfg.time, speed, cfg, len(words.val),
                                     time.monotonic() - start.started), eval_chars=kept)
    if start.world.distributed:
        plan = Plan.from_dict(start.world.broadcast_json(
            plan.to_dict() if start.world.is_writer else None))
    return plan


def _build(start: Start, decided: Decided, words: Text, model: CharRNN, lock,
           state: dict | None = None, measured: Speed | None = None) -> Setup:
    """The loop's Setup: the streams (a batch shrunk for a small text), the planned end, and
    the evaluations."""
    cfg, plan, world = decided.cfg, decided.plan, start.world
    batch, seq, warning = fit_batch(len(words.train), cfg.batch_size, cfg.seq_len)
    if warning and state is None:
        start.reporter.warn(warning)
    if warning and world.distributed:  # a batch shrunk for a small text: one the ranks share
        batch -= batch % world.size
        if not batch:
            raise CharrnnError(f"the training text ({len(words.train):,} characters) is too "
                               f"small to divide among {world.size} processes; train it in one")
    train_streams = Streams(words.train, batch, seq, world.share(batch)).to(start.device)
    stops = [n for n in (cfg.max_steps,
                         cfg.epochs and math.ceil(cfg.epochs * train_streams.windows)) if n]
    total = max(min(stops), 1) if stops else None  # (a time budget's end: its plan's)
    if plan is not None:  # the plan says when to evaluate, and on how much
        eval_chars = plan.eval_chars
    else:  # a budget of steps or epochs: its evaluations are budgeted by characters
        eval_every, eval_chars = eval_settings(total, batch * seq, len(words.val),
                                               cfg.eval_every, cfg.eval_chars)
        cfg = replace(cfg, eval_every=eval_every, eval_chars=eval_chars)
    eb, et, _ = fit_batch(min(eval_chars, len(words.val)), VALIDATION_BATCH, seq)
    eval_ids = (spread(words.val, eval_chars, eb, et) if cfg.eval_from == "spread" else
                words.val[:eval_chars])
    val_streams = Streams(eval_ids, eb, et, world.share(eb, equal=False)).to(start.device)
    return Setup(run=start.run, cfg=cfg, model=model, vocab=words.vocab, corpus=words.corpus,
                 device=start.device, train_streams=train_streams, val_streams=val_streams,
                 steps=total, plan=plan, choice=decided.choice, lock=lock,
                 resume_state=state, world=world,
                 threads=start.cpu or threads.Threads(1, 1, False, "as given"),
                 started=start.started, measured=measured)
