"""Every setting a new run leaves open, decided for its budget, its corpus and its device: the
model by the rule (charrnn/budget/rule.py) from this device's calibrated speeds, and a time
budget's plan of steps; under torchrun, the plan from the job's own speed."""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from charrnn.budget import calibrate, rule
from charrnn.budget.plan import Plan, first_plan
from charrnn.budget.speed import Speed
from charrnn.config import ModelConfig, TrainConfig
from charrnn.device import name_of
from charrnn.engine.distributed import SINGLE, World
from charrnn.engine.streams import fit_batch

SIZE_FLAGS = ("layers", "hidden_size", "embedding_size", "dropout")


def decide(cfg: TrainConfig, given: dict, vocab_size: int, train_chars: int, val_chars: int,
           device: torch.device, say, world: World = SINGLE,
           started: float | None = None):
    """Every setting the user left open, for the budget: (cfg, model config, plan, choice);
    `say(line)` tells what is timed. In a
    torchrun job, the device is timed on one rank's share of the batch, and the job's speed
    taken as that many times it (the gradients' exchange is timed later, for the plan), and the
    default batch is rounded up to a multiple of the ranks."""
    model = given.get("model", "lstm")
    given_sizes = {k: given[k] for k in SIZE_FLAGS if given.get(k) is not None}
    given_train = {k: getattr(cfg, k) for k in ("batch_size", "seq_len", "lr")
                   if getattr(cfg, k) is not None}
    default_batch = -(-rule.BATCH_SIZE // world.size) * world.size  # one that they share
    batch, seq = _shape(train_chars, given_train, default_batch, world)
    seconds = cfg.time_budget
    started = time.monotonic() if started is None else started
    # calibrating takes at most this long, in wall time, whatever the load
    deadline = time.perf_counter() + calibrate.calibration_budget(seconds or 0.0)

    def timed(mc: ModelConfig, sizes: list[int], too_big=None):
        speeds = calibrate.calibrate(device, mc, sizes, batch // world.size, seq, cfg.amp,
                                     deadline - time.perf_counter(), say,
                                     *([too_big] if too_big else []))
        return {h: replace(v, train=v.train * world.size, eval=v.eval * world.size)
                for h, v in speeds.items()}

    if seconds is None:  # a budget of steps or epochs: its characters are known already
        chars = [n for n in (cfg.max_steps and cfg.max_steps * batch * seq,
                             cfg.epochs and cfg.epochs * train_chars) if n]
        choice = rule.choose(model=model, vocab_size=vocab_size, corpus_chars=train_chars,
                             given_model=given_sizes, given_train=given_train,
                             chars=int(min(chars)), batch_size=default_batch)
        speeds = None
    else:
        base = ModelConfig(vocab_size=vocab_size, model=model,
                           layers=given_sizes.get("layers", rule.LAYERS),
                           hidden_size=given_sizes.get("hidden_size", rule.HIDDEN_SIZES[0]),
                           embedding_size=given_sizes.get("embedding_size", rule.EMBEDDING),
                           dropout=given_sizes.get("dropout", 0.0))
        sizes = [base.hidden_size] if "hidden_size" in given_sizes else list(rule.HIDDEN_SIZES)

        def too_big(hidden: int, speed: Speed) -> bool:
            mc = ModelConfig(**{**base.to_dict(), "hidden_size": hidden})
            chars = speed.train * seconds * rule.TRAIN_SHARE
            return not rule.enough_chars(rule.parameters(mc), chars, train_chars)

        speeds = timed(base, sizes, too_big)
        choice = rule.choose(model=model, vocab_size=vocab_size, corpus_chars=train_chars,
                             given_model=given_sizes, given_train=given_train,
                             seconds=seconds, speeds=speeds, where=name_of(device),
                             batch_size=default_batch)
    cfg = replace(cfg, **choice.train)
    mc = choice.model
    plan = None
    if seconds is not None:
        speed = speeds[mc.hidden_size]
        if mc.dropout and not base.dropout:  # dropout was chosen: time the model as it will be
            speed = timed(mc, [mc.hidden_size]).get(mc.hidden_size, speed)
        plan = first_plan(seconds, speed, cfg, val_chars, time.monotonic() - started)
    return cfg, mc, plan, {"reason": choice.reason if choice.chosen else "",
                           "chosen": choice.chosen, "chars": choice.chars}


def _shape(train_chars: int, given_train: dict, default_batch: int, world: World
           ) -> tuple[int, int]:
    """The batch and window that will train: a small corpus shrinks them (see setup), and the
    characters a budget holds, so the passes it makes (and the dropout), follow them."""
    batch, seq, _ = fit_batch(train_chars, given_train.get("batch_size", default_batch),
                              given_train.get("seq_len", rule.SEQ_LEN))
    if world.distributed:
        batch = max(batch - batch % world.size, world.size)
    return batch, seq


def job_plan(plan: Plan, device: torch.device, mc: ModelConfig, cfg: TrainConfig,
             val_chars: int, world: World, started: float) -> Plan:
    """A torchrun job's plan: the choice took N times one rank's speed; the steps follow the
    job's own, timed on every rank at once with the gradients exchanged, as rank 0 measured it
    (sent to every rank)."""
    speed = calibrate.measure(device, mc, cfg.batch_size // world.size, cfg.seq_len, cfg.amp,
                              world=world)
    mine = replace(first_plan(plan.seconds, speed, cfg, val_chars, time.monotonic() - started),
                   eval_chars=plan.eval_chars)
    # each rank's clock read its own figure: rank 0's plan is the job's, or the ranks would
    # stop (and check their plan) at different steps and wait on each other for ever
    return Plan.from_dict(world.broadcast_json(mine.to_dict() if world.is_writer
                                                        else None))
