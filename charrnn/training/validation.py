"""The loop's evaluations: the validation loss, and what follows from it (the best weights,
the latest state, a metrics line, the display, TensorBoard, a sample). Functions of a Trainer
`t`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from charrnn import checkpoint, rundir
from charrnn.config import LN2
from charrnn.training import state, stopping


@torch.no_grad()
def validation_loss(t) -> float:
    """The mean validation loss (in a torchrun job, each rank's streams summed over all)."""
    t.model.eval()
    s = t.val_streams
    hidden = t.model.init_state(s.held, t.device)
    total = torch.zeros((), device=t.device, dtype=torch.float64)
    for i in range(s.windows if s.held else 0):
        x, y = s.tensors(i, t.device)
        with t.runner.autocast():
            logits, hidden = t.model(x, hidden)
        total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum")
    t.model.train()
    return t.world.sum(total).item() / (s.windows * s.batch * s.seq_len)


def evaluate_and_save(t, chars_per_sec: float) -> None:
    began = t.clock()
    record = t.figures(chars_per_sec)
    val_loss = validation_loss(t)  # run with the weights after the last update
    evaluated = t.clock() - began
    for loss in (record["train_loss"], val_loss):  # not max(): max(3.0, nan) is 3.0
        stopping.check_divergence(t, loss)
    best = t.schedule.observe(val_loss)
    record.update(val_loss=val_loss, val_bpc=val_loss / LN2, best=best,
                  threads=t.governor.threads)
    del record["progress"], record["eta"]
    t.since_eval = []
    t.evaluations += 1
    latest = state.capture(t)
    if t.world.is_writer:
        _write(t, record, best, val_loss, latest)
    s = t.val_streams
    t.timing.evaluation(s.windows * s.batch * s.seq_len, evaluated, t.clock() - began)


def _write(t, record: dict, best: bool, val_loss: float, latest: dict) -> None:
    with t.saving():
        if best:
            checkpoint.save_weights(t.run, t.model, val_loss)
            checkpoint.write_config(t.run, t.config_dict())
        checkpoint.save_state(t.run, latest)
        rundir.append_metrics(t.run, record)
    t.reporter.evaluation(record)
    if t.tensorboard is not None:
        t.tensorboard.evaluation(record, t.step)
    if t.cfg.sample_every and t.evaluations % t.cfg.sample_every == 0:
        text = t.sample()
        with t.saving():
            rundir.append_sample(t.run, t.step, text)
        t.reporter.sample(t.step, text)
        if t.tensorboard is not None:
            t.tensorboard.sample(text, t.step)
