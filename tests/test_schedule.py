"""The learning-rate schedule and the stopping rule follow steps and validation, not the clock."""

import json
import math

import pytest
from conftest import train_run

from charrnn.budget.pacer import Pacer
from charrnn.training.schedule import Schedule

TEXT = "It was the best of times, it was the worst of times.\n" * 60


def test_warm_up_then_a_cosine_over_the_planned_steps():
    s = Schedule(lr=1.0, warmup_steps=10, min_lr_frac=0.1)
    pacer = Pacer(None, 110, 10, 10, 100)  # a run of 110 steps: no plan, no re-plan
    lr_at = lambda step: s.lr_at(step, pacer.progress(step))  # noqa: E731
    assert lr_at(0) == pytest.approx(0.1) and lr_at(9) == pytest.approx(1.0)
    assert lr_at(10) == pytest.approx(1.0)
    assert lr_at(60) == pytest.approx(0.55)  # halfway down the cosine
    assert lr_at(110) == pytest.approx(0.1) and lr_at(500) == pytest.approx(0.1)


def test_a_scripted_sequence_of_validation_losses_decays_the_rate_and_stops():
    s = Schedule(lr=1.0, warmup_steps=0, patience=2, lr_decay=0.5,
                 max_decays=2)
    script = [(3.0, 1.0, False), (3.1, 1.0, False), (3.0, 0.5, False),  # plateau: decay
              (2.5, 0.5, False),  # a new best: the count starts again, the rate stays
              (2.6, 0.5, False), (2.5, 0.25, False),  # equal is no better: decay
              (2.55, 0.25, False), (2.7, 0.125, False),  # a second decay with no best
              (2.6, 0.125, False), (2.6, 0.125, True)]  # a third plateau: stop
    for loss, scale, stopped in script:
        s.observe(loss)
        assert (s.scale, s.stopped) == (scale, stopped), loss
    assert s.best == 2.5


def test_patience_0_never_decays_and_never_stops():
    s = Schedule(lr=1.0, patience=0)
    for _ in range(50):
        s.observe(5.0)
    assert s.scale == 1.0 and not s.stopped


def test_observe_says_whether_the_loss_is_the_best_so_far():
    s = Schedule(lr=1.0)
    assert s.observe(2.0) and not s.observe(2.0) and s.observe(1.99999)
    assert s.best == 1.99999


def test_the_state_round_trips():
    s = Schedule(lr=1.0, patience=1)
    for loss in (3.0, 3.0, 2.0, 2.5):
        s.observe(loss)
    t = Schedule(lr=1.0, patience=1)
    t.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert t == s


def test_a_run_resumed_mid_decay_matches_an_uninterrupted_one_loss_for_loss(write, tmp_path):
    corpus = write("dickens.txt", TEXT)
    # a rate too small to learn: every evaluation is a plateau, so the rate decays as it goes
    settings = dict(max_steps=30, eval_every=2, patience=1, max_decays=20, lr=1e-7,
                    batch_size=3, seq_len=8)
    _, whole = train_run(corpus, tmp_path / "whole", callback=lambda t: None, **settings)

    def stop_at_13(trainer):
        if trainer.step == 13:
            assert trainer.schedule.scale < 1  # the interruption falls after a decay
            trainer.interrupt()

    _, first = train_run(corpus, tmp_path / "split", callback=stop_at_13, **settings)
    _, second = train_run(None, tmp_path / "split", resume=True)
    assert first.losses + second.losses == whole.losses

    def rates(run):
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [(r["step"], r["lr"], r["val_loss"]) for r in map(json.loads, lines)]

    assert rates(tmp_path / "split") == rates(tmp_path / "whole")
    assert rates(tmp_path / "whole")[-1][1] < settings["lr"] * 2 ** -10
    assert math.isfinite(whole.best_val_loss)
