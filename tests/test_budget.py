"""A time budget that follows the machine to the end: on a clock whose speed drifts, the run is
planned again at every evaluation and ends at its planned end, inside 0.97 to 1.02 of its
budget; --resume after a kill and --plan-from replay it loss for loss."""

import json

import pytest
from conftest import train_run

from charrnn import checkpoint
from charrnn.budget import calibrate
from charrnn.budget.plan import Plan
from charrnn.budget.speed import Speed

pytestmark = pytest.mark.slow  # whole training runs, each replayed twice

TEXT = "Call me Ishmael. Some years ago, never mind how long precisely.\n" * 80
SETTINGS = dict(time=60.0, batch_size=4, seq_len=16, patience=0, sample_every=0, eval_every=None,
                model={"layers": 1, "hidden_size": 16, "embedding_size": 8, "dropout": 0.0})
DRIFTS = {
    "falls 30%": lambda f: 1.0 - 0.3 * f,  # the machine's speed, at fraction f of the budget
    "rises 30%": lambda f: 1.0 + 0.3 * f,
    "halves at the midpoint": lambda f: 1.0 if f < 0.5 else 0.5,
}


class DriftingClock:
    """The loop's clock on a machine whose speed follows `drift` over the budget: each step
    and each evaluation takes what the first plan says at the speed it was calibrated at,
    divided by the machine's speed at that moment of the run (its own elapsed training time,
    restored on --resume: a resumed run sees the same machine)."""

    def __init__(self, drift):
        self.drift, self.t, self.seen = drift, 1000.0, None

    def __get__(self, trainer, owner):
        return lambda: self.tick(trainer)

    def tick(self, trainer) -> float:
        plan, s = trainer.plan, trainer.train_streams
        per_step = s.batch * s.seq_len / plan.chars_per_sec
        per_eval = plan.eval_chars / plan.eval_chars_per_sec
        now = (trainer.step, trainer.evaluations)
        if self.seen is not None:
            speed = self.drift(min(trainer.elapsed / plan.seconds, 1.0))
            self.t += ((now[0] - self.seen[0]) * per_step +
                       (now[1] - self.seen[1]) * per_eval) / speed
        self.seen = now
        return self.t


def steps_of(plan: Plan) -> list[tuple[int, int, int]]:
    return [(r.at, r.steps, r.eval_every) for r in plan.replans]


@pytest.fixture
def drifting(monkeypatch):
    """A fixed calibrated speed, no set-up time, and the loop's clock drifting as asked."""
    import time
    from types import SimpleNamespace

    from charrnn.budget import decide
    from charrnn.training import prepare
    from charrnn.training.loop import Trainer

    still = SimpleNamespace(monotonic=lambda: 0.0, perf_counter=time.perf_counter)
    monkeypatch.setattr(prepare, "time", still)
    monkeypatch.setattr(decide, "time", still)
    monkeypatch.setattr(calibrate, "measure", lambda *a, **k: Speed(train=2000.0, eval=6000.0))

    def use(drift):
        monkeypatch.setattr(Trainer, "clock", DriftingClock(drift))
    return use


@pytest.mark.parametrize("drift", list(DRIFTS))
def test_a_run_on_a_drifting_machine_ends_at_its_planned_end_and_replays_exactly(
        drift, write, tmp_path, drifting):
    corpus = write("moby.txt", TEXT)
    drifting(DRIFTS[drift])
    trainer, whole = train_run(corpus, tmp_path / "whole", callback=lambda t: None, **SETTINGS)
    plan = trainer.plan
    assert len(plan.replans) >= 15  # planned again at (nearly) every evaluation
    took = plan.setup_seconds + trainer.elapsed
    if drift != "halves at the midpoint":
        assert whole.stopped_by == "time" and whole.step == plan.end
        assert 0.97 * plan.seconds <= took <= 1.02 * plan.seconds, took
    else:  # the first re-plan after the halving sees part of it; the next, all of it
        speeds = [r.chars_per_sec for r in plan.replans]
        k = next(i for i, v in enumerate(speeds) if v < 0.9 * speeds[0])
        assert speeds[k + 1] == pytest.approx(speeds[0] / 2, rel=0.1), speeds
        assert whole.stopped_by in ("time", "clock")
        assert 0.97 * plan.seconds <= took <= 1.05 * plan.seconds, took
    recorded = json.loads((tmp_path / "whole" / checkpoint.CONFIG).read_text())["plan"]
    assert Plan.from_dict(recorded) == plan

    # killed after some re-plans, resumed on the same machine: the same plan, loss for loss
    def stop(t):
        if t.step == plan.replans[len(plan.replans) // 2].at + 3:
            t.interrupt()

    drifting(DRIFTS[drift])
    _, first = train_run(corpus, tmp_path / "split", callback=stop, **SETTINGS)
    drifting(DRIFTS[drift])
    resumed, second = train_run(None, tmp_path / "split", resume=True)
    assert steps_of(resumed.plan) == steps_of(plan)  # (its speeds to the last bits of a float:
    assert [r.chars_per_sec for r in resumed.plan.replans] == pytest.approx(  # clocks that began
        [r.chars_per_sec for r in plan.replans], rel=1e-9)  # elsewhere round elsewhere)
    assert first.losses + second.losses == whole.losses

    # repeated with --plan-from: its recorded plan, step for step, with no clock at all
    from conftest import quiet

    from charrnn.training import prepare

    again = prepare.repeat(tmp_path / "whole", None, tmp_path / "again", reporter=quiet())
    repeated = again.run_loop()
    assert again.plan.repeat and repeated.step == whole.step
    assert repeated.losses == whole.losses


def test_the_learning_rate_ends_at_the_schedules_last_and_never_jumps(write, tmp_path,
                                                                      drifting):
    """Each re-plan bends the cosine from where it stands: the rate falls step by step, with
    no jump at a re-plan, and ends at lr * min_lr_frac."""
    drifting(DRIFTS["falls 30%"])
    seen = []
    trainer, _ = train_run(write("moby.txt", TEXT), tmp_path / "run",
                           callback=lambda t: seen.append(t.figures(0.0)["lr"]), **SETTINGS)
    cfg = trainer.cfg
    falling = seen[cfg.warmup_steps + 1:]
    assert all(b <= a + 1e-12 for a, b in zip(falling, falling[1:]))
    steps = [abs(b - a) for a, b in zip(falling, falling[1:])]
    assert max(steps) < 5 * (cfg.lr / len(falling))  # no jump: a few average steps at most
    assert seen[-1] == pytest.approx(cfg.lr * cfg.min_lr_frac, rel=1e-6)


def test_the_last_evaluation_after_the_planned_end_records_no_steps_never_taken(
        write, tmp_path, drifting):
    """A run with the user's --eval-every longer than the run evaluates once, after it stopped
    at its planned end; the machine, faster by then, left time over. That evaluation must not
    plan more steps (it once did, and --plan-from then trained past where the run ended)."""
    from conftest import quiet

    from charrnn.training import prepare

    corpus = write("moby.txt", TEXT)
    drifting(lambda f: 1.0 if f < 0.05 else 3.0)
    settings = {**SETTINGS, "eval_every": 10**6}
    trainer, whole = train_run(corpus, tmp_path / "whole", **settings)
    assert whole.stopped_by == "time" and whole.step == trainer.plan.end
    recorded = Plan.from_dict(json.loads((tmp_path / "whole" / checkpoint.CONFIG).read_text())
                              ["plan"])
    assert recorded.end == whole.step
    again = prepare.repeat(tmp_path / "whole", None, tmp_path / "again", reporter=quiet())
    repeated = again.run_loop()
    assert repeated.step == whole.step and repeated.losses == whole.losses
