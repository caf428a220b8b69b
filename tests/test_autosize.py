"""The automatic choice of model and settings: the rule, the calibration cache, the plan."""

import json

import pytest
from conftest import PlannedClock, train_run

from charrnn import checkpoint
from charrnn.budget import calibrate, rule
from charrnn.budget import plan as planning
from charrnn.budget.speed import Speed

CHOSEN = {"layers": None, "hidden_size": None, "embedding_size": None, "dropout": None}
TEXT = "Call me Ishmael. Some years ago, never mind how long precisely.\n" * 80


def speeds_like_a_cpu(scale: float = 1.0) -> dict:
    """Speeds that fall with size as a CPU's do: about 1 / parameters."""
    return {h: Speed(train=scale * 1.1e5 * (128 / h) ** 1.8, eval=scale * 3e5 * (128 / h) ** 1.8)
            for h in rule.HIDDEN_SIZES}


def choose(**kw):
    args = dict(model="lstm", vocab_size=65, corpus_chars=1_000_000, given_model={},
                given_train={})
    return rule.choose(**{**args, **kw})


def test_more_time_never_picks_a_smaller_model():
    for scale in (0.05, 0.3, 1.0, 10.0, 300.0):  # a slow laptop to a large GPU
        sizes = [choose(seconds=s, speeds=speeds_like_a_cpu(scale)).model.hidden_size
                 for s in (10, 45, 120, 240, 600, 1800, 7200)]
        assert sizes == sorted(sizes), (scale, sizes)
    sizes = [choose(chars=c).model.hidden_size for c in (10**5, 10**6, 10**7, 10**8)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_a_faster_device_never_picks_a_smaller_model():
    sizes = [choose(seconds=120, speeds=speeds_like_a_cpu(s)).model.hidden_size
             for s in (0.1, 0.3, 1, 3, 10)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_a_tiny_corpus_gets_more_dropout_than_a_huge_one():
    tiny = choose(chars=20_000_000, corpus_chars=100_000)
    huge = choose(chars=20_000_000, corpus_chars=100_000_000)
    assert tiny.model.dropout > huge.model.dropout == 0.0
    assert "passes over the corpus" in tiny.reason


def test_a_tiny_corpus_caps_the_model_size():
    tiny = choose(chars=10**9, corpus_chars=50_000)
    big = choose(chars=10**9, corpus_chars=50_000_000)
    assert tiny.model.hidden_size < big.model.hidden_size


def test_the_settings_a_user_gives_are_kept_and_the_rest_chosen_around_them():
    c = choose(seconds=60, speeds=speeds_like_a_cpu(),
               given_model={"layers": 3, "dropout": 0.25}, given_train={"lr": 1e-3})
    assert c.model.layers == 3 and c.model.dropout == 0.25 and c.train["lr"] == 1e-3
    assert set(c.chosen) == {"hidden_size", "embedding_size", "batch_size", "seq_len"}
    fixed = choose(chars=10**8, given_model={"hidden_size": 48})
    assert fixed.model.hidden_size == 48


def test_the_reason_names_the_size_the_budget_and_the_speed():
    c = choose(seconds=45, speeds=speeds_like_a_cpu(), where="a test CPU")
    h = c.model.hidden_size
    assert c.reason.startswith(f"2x{h} lstm: about ") and "in 45 s at" in c.reason
    assert "chars/s on a test CPU" in c.reason
    assert c.chars == pytest.approx(speeds_like_a_cpu()[h].train * 45 * rule.TRAIN_SHARE,
                                    abs=1)


def test_the_plan_fills_the_budget_and_keeps_evaluation_to_a_small_share():
    from charrnn.config import TrainConfig

    cfg = TrainConfig(batch_size=32, seq_len=64, lr=4e-3)
    p = planning.first_plan(240, Speed(train=20_000, eval=60_000), cfg, val_chars=111_000)
    evaluation = planning.EVALUATIONS * p.eval_chars / 60_000
    training = p.steps * 32 * 64 / 20_000
    assert evaluation <= planning.EVAL_SHARE * 240 + 1e-9
    assert 0.85 * 240 <= training + evaluation <= 240
    assert p.eval_every == p.steps // planning.EVALUATIONS
    short = planning.first_plan(10, Speed(train=20_000, eval=60_000), cfg, val_chars=111_000)
    assert short.eval_chars < p.eval_chars  # a short budget validates on less text


# ---------------------------------------------------------------------------------------------
# Calibration through real runs (with the measurement faked: the plan is then fixed)


@pytest.fixture
def measured(monkeypatch):
    """Replace the timing of a size by a fixed speed, the training loop's clock by one that
    runs at the planned speed, and the set-up's by one that stands still (a few milliseconds
    more or less of set-up would change the budget left, so the re-plans); record which sizes
    were timed."""
    import time
    from types import SimpleNamespace

    from charrnn.budget import decide
    from charrnn.training import prepare
    from charrnn.training.loop import Trainer

    still = SimpleNamespace(monotonic=lambda: 0.0, perf_counter=time.perf_counter)
    monkeypatch.setattr(prepare, "time", still)
    monkeypatch.setattr(decide, "time", still)
    calls = []
    monkeypatch.setattr(Trainer, "clock", PlannedClock())

    def measure(device, mc, batch, seq, amp, min_seconds=0.25, **kw):
        calls.append(mc.hidden_size)
        # far slower than any machine, even a loaded one, runs these tiny models, so the
        # planned steps end the run long before the clock's safety stop
        return Speed(train=6e4 / mc.hidden_size, eval=2e5 / mc.hidden_size)

    monkeypatch.setattr(calibrate, "measure", measure)
    return calls


def test_calibration_is_cached_so_the_next_run_starts_at_once_and_chooses_the_same(
        write, tmp_path, measured):
    corpus = write("moby.txt", TEXT)
    first, _ = train_run(corpus, tmp_path / "a", model=CHOSEN, time=10.0, batch_size=4, seq_len=16)
    assert measured  # the first run timed some sizes
    timed = len(measured)
    second, _ = train_run(corpus, tmp_path / "b", model=CHOSEN, time=10.0, batch_size=4, seq_len=16)
    assert len(measured) == timed  # the second read them from the cache
    assert second.model.config == first.model.config
    config = json.loads((tmp_path / "a" / checkpoint.CONFIG).read_text())
    assert config["choice"]["chosen"] == ["layers", "hidden_size", "embedding_size", "dropout",
                                          "lr"]
    assert config["plan"]["steps"] == first.plan.steps
    assert config["model"]["hidden_size"] == first.model.config.hidden_size


def test_calibration_is_skipped_when_every_size_flag_is_given(write, tmp_path, measured):
    corpus = write("moby.txt", TEXT)
    sizes = {"layers": 1, "hidden_size": 24, "embedding_size": 8, "dropout": 0.0}
    train_run(corpus, tmp_path / "a", model=sizes, max_steps=3)
    assert measured == []  # a budget of steps needs no speed at all
    train_run(corpus, tmp_path / "b", model=sizes, time=10.0, batch_size=4, seq_len=16)
    assert measured == [24]  # a time budget needs the one given size's speed, no other


def test_a_damaged_calibration_cache_is_rebuilt(write, tmp_path, cache_dir, measured):
    corpus = write("moby.txt", TEXT)
    cache = cache_dir / "calibration.json"
    for damage in (b"{not json", b"", json.dumps({"format": 1, "speeds": {"k": 3}}).encode(),
                   json.dumps({"format": 1, "speeds": [1, 2]}).encode(), b"\xff\xfe"):
        cache.write_bytes(damage)
        trainer, outcome = train_run(corpus, tmp_path / f"run{len(measured)}",
                                     model={"hidden_size": 16}, time=2.0,
                                     batch_size=4, seq_len=16)
        assert outcome.stopped_by == "time"
        assert json.loads(cache.read_text())["format"] == calibrate.CACHE_FORMAT
    cache.unlink()
    train_run(corpus, tmp_path / "deleted", model={"hidden_size": 16}, time=2.0, batch_size=4,
              seq_len=16)
    assert cache.exists()


@pytest.mark.slow
def test_same_seed_under_a_time_budget_gives_the_same_losses(write, tmp_path, measured):
    corpus = write("moby.txt", TEXT)
    settings = dict(time=20.0, batch_size=4, seq_len=16, eval_every=10, patience=0)
    _, a = train_run(corpus, tmp_path / "a", callback=lambda t: None, **settings)
    _, b = train_run(corpus, tmp_path / "b", callback=lambda t: None, **settings)
    assert a.stopped_by == b.stopped_by == "time"
    assert a.losses == b.losses and len(a.losses) > 20


@pytest.mark.slow
def test_a_time_budget_run_interrupted_and_resumed_matches_an_uninterrupted_one(
        write, tmp_path, measured):
    corpus = write("moby.txt", TEXT)
    settings = dict(time=20.0, batch_size=4, seq_len=16, eval_every=10, patience=0)
    _, whole = train_run(corpus, tmp_path / "whole", callback=lambda t: None, **settings)

    def stop_at_25(trainer):
        if trainer.step == 25:
            trainer.interrupt()

    _, first = train_run(corpus, tmp_path / "split", callback=stop_at_25, **settings)
    _, second = train_run(None, tmp_path / "split", resume=True)
    assert first.step == 25 and second.stopped_by == "time"
    assert first.losses + second.losses == whole.losses


def test_a_raised_time_on_resume_is_planned_again_from_the_runs_own_speed(write, tmp_path,
                                                                          measured):
    corpus = write("moby.txt", TEXT)

    def stop_at_25(trainer):
        if trainer.step == 25:
            trainer.interrupt()

    trainer, first = train_run(corpus, tmp_path / "run", callback=stop_at_25, time=5.0,
                               batch_size=4, seq_len=16, eval_every=10, patience=0)
    before = trainer.plan
    assert first.stopped_by == "interrupted" and before.end > 25
    trainer, second = train_run(None, tmp_path / "run", resume=True, time=10.0)
    after = trainer.plan
    assert after.seconds == 10.0 and second.stopped_by == "time"
    assert second.step == after.end and after.end > 1.8 * before.end  # twice the time
    speed = json.loads((tmp_path / "run" / "config.json").read_text())["speed"]
    assert after.chars_per_sec == pytest.approx(speed["train"], rel=0.2)  # its own speed
    assert json.loads((tmp_path / "run" / "config.json").read_text())["plan"]["seconds"] == 10


def test_the_clock_stops_a_run_that_overruns_its_plan(write, tmp_path, measured, monkeypatch):
    from charrnn.training.loop import Trainer

    clock = PlannedClock()
    monkeypatch.setattr(Trainer, "clock", clock)

    def slow_down(trainer):  # late in the run, after the last re-plan but one, the machine
        if trainer.step >= 0.9 * trainer.pacer.end:  # gets ten times slower, suddenly
            clock.slower = 10.0

    trainer, outcome = train_run(write("moby.txt", TEXT), tmp_path / "run", time=20.0,
                                 batch_size=4, seq_len=16, callback=slow_down)
    plan = trainer.plan
    assert outcome.stopped_by == "clock" and outcome.step < trainer.pacer.end
    assert plan.clock_limit <= trainer.elapsed < plan.clock_limit + 1.0
    assert plan.clock_limit <= plan.seconds * (1 + planning.CLOCK_MARGIN)
    assert (tmp_path / "run" / checkpoint.WEIGHTS).exists()  # it ends with an evaluation


def test_the_rule_uses_the_fit_written_down_in_benchmarks():
    from pathlib import Path

    fit = Path(__file__).resolve().parents[1] / "benchmarks" / "grid" / "fit.json"
    if not fit.exists():
        pytest.skip("benchmarks/grid/fit.json is absent")
    written = json.loads(fit.read_text())
    assert rule.CHARS_PER_PARAMETER == written["chars_per_parameter"]
    assert rule.REPEAT_DECAY == written["repeat_decay"]


# ---------------------------------------------------------------------------------------------
# A calibration that cannot poison, and that learns


def model_config(hidden=16):
    from charrnn.config import ModelConfig
    return ModelConfig(vocab_size=65, layers=1, hidden_size=hidden, embedding_size=8,
                       dropout=0.0)


def test_a_timing_whose_threads_did_not_get_the_cpu_is_not_cached(cache_dir, monkeypatch):
    import time
    from types import SimpleNamespace

    import torch

    # the process's CPU time stands still while the wall clock runs: another process had it
    frozen = SimpleNamespace(perf_counter=time.perf_counter, process_time=lambda: 1.0)
    monkeypatch.setattr(calibrate, "time", frozen)
    said = []
    speeds = calibrate.calibrate(torch.device("cpu"), model_config(), [16], 4, 16, False, 10.0,
                                said.append)
    assert speeds[16].share < calibrate.SHARE_MIN and not speeds[16].clean
    assert any("the machine was busy while timing" in line and "not caching it" in line
               for line in said), said
    assert calibrate._read_cache() == {}  # nothing kept: the next run times it again


def test_calibration_keeps_to_its_wall_time_whatever_a_step_costs(cache_dir, monkeypatch):
    import time

    import torch

    from charrnn.engine.step import StepRunner

    step = StepRunner.step

    def slow_step(self, *a, **k):
        time.sleep(0.3)  # a machine so loaded that every step takes 0.3 s
        return step(self, *a, **k)

    monkeypatch.setattr(StepRunner, "step", slow_step)
    said = []
    start = time.perf_counter()
    speeds = calibrate.calibrate(torch.device("cpu"), model_config(), [16, 24, 32, 48], 4, 16,
                                False, 1.0, said.append)
    took = time.perf_counter() - start
    assert took < 1.0 + 0.3 + 0.5  # the budget, and at most the one step it was inside
    assert speeds and all(not s.clean for s in speeds.values())
    # (a step that sleeps also gets none of the CPU it would ask for: said as a busy machine)
    assert any("not caching it" in line for line in said), said


def test_real_calibration_beside_a_busy_core_keeps_to_its_wall_time(cache_dir):
    """No mock: every candidate size at the default batch, timed on this machine while another
    process keeps a core busy, within the calibration's time (plus the step it was inside)."""
    import subprocess
    import sys
    import time

    import torch

    from charrnn.config import ModelConfig

    base = ModelConfig(vocab_size=100, layers=2, hidden_size=64, embedding_size=64, dropout=0.0)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        said = []
        start = time.perf_counter()
        speeds = calibrate.calibrate(torch.device("cpu"), base, list(rule.HIDDEN_SIZES),
                                     rule.BATCH_SIZE, rule.SEQ_LEN, False, 1.0, said.append)
        took = time.perf_counter() - start
    finally:
        busy.kill()
        busy.wait()
    assert speeds and min(speeds) == 64  # the smallest is timed first
    assert len(speeds) < len(rule.HIDDEN_SIZES)  # the 2x1024 does not fit in a second
    step_64 = rule.BATCH_SIZE * rule.SEQ_LEN / speeds[64].train
    assert took < 1.0 + 2 * step_64 + 0.5, (took, speeds)


def test_a_calibration_with_no_time_left_times_nothing(cache_dir):
    import torch

    said = []
    assert calibrate.calibrate(torch.device("cpu"), model_config(), [16, 32], 4, 16, False,
                               -1.2, said.append) == {}
    assert said == []  # (it once said "the time for calibrating (-1.2 s) ran out")


def test_the_estimate_leaves_out_a_slow_moment():
    samples = [{"train": t, "eval": 3 * t} for t in (100.0, 10_000.0, 9_000.0, 11_000.0)]
    assert calibrate.estimate(samples).train == 10_000.0
    assert calibrate.estimate(samples[:2]).train == 10_000.0  # one good timing outweighs it
    assert calibrate.estimate([]) is None


@pytest.mark.slow
def test_a_planted_slow_entry_is_corrected_by_the_next_run(write, tmp_path, cache_dir,
                                                           monkeypatch):
    import time
    from types import SimpleNamespace

    import torch

    from charrnn.config import ModelConfig
    from charrnn.training import loop as train

    # the run gets all the CPU it asks for, whatever else this machine runs beside the tests
    monkeypatch.setattr(train, "time", SimpleNamespace(
        monotonic=time.monotonic, perf_counter=time.perf_counter, process_time=time.monotonic))

    corpus = write("moby.txt", TEXT * 10)
    sizes = {"layers": 1, "hidden_size": 32, "embedding_size": 16, "dropout": 0.0}
    mc = ModelConfig(vocab_size=len(set(TEXT)), **sizes)
    key = calibrate.cache_key(torch.device("cpu"), mc, 4, 16, False, threads=1)
    calibrate._write_cache({key: [{"train": 500.0, "eval": 1500.0, "source": "calibration"}]})
    # a planted 100x-slow (or worse) entry: the run plans a few steps from it...
    trainer, outcome = train_run(corpus, tmp_path / "a", model=sizes, time=6.0, batch_size=4,
                                 seq_len=16, sample_every=0, eval_every=None)
    plan = trainer.plan
    assert plan.replans and plan.end > 10 * plan.steps  # ...and re-plans
    assert outcome.stopped_by in ("time", "clock")  # (the clock: a loaded machine's tests)
    learned = calibrate.cached(key)
    assert learned.train > 100 * 50.0  # the cache now holds what the run measured
    config = json.loads((tmp_path / "a" / checkpoint.CONFIG).read_text())
    assert config["speed"]["train"] == pytest.approx(learned.train, rel=0.5)
    # the next run plans from it at once
    second, _ = train_run(corpus, tmp_path / "b", model=sizes, time=6.0, batch_size=4,
                          seq_len=16, sample_every=0, eval_every=None)
    assert second.plan.chars_per_sec == pytest.approx(learned.train)


# ---------------------------------------------------------------------------------------------
# The budget honoured


def test_a_run_slower_than_planned_plans_again_and_ends_inside_its_budget(
        write, tmp_path, measured, monkeypatch):
    import time
    from types import SimpleNamespace

    from charrnn.budget import decide
    from charrnn.training import prepare
    from charrnn.training.loop import Trainer

    # set-up takes no time, so that every run has the same budget left for its loop
    still = SimpleNamespace(monotonic=lambda: 0.0, perf_counter=time.perf_counter)
    monkeypatch.setattr(prepare, "time", still)
    monkeypatch.setattr(decide, "time", still)
    monkeypatch.setattr(Trainer, "clock", PlannedClock(slower=2.0))
    corpus = write("moby.txt", TEXT)
    settings = dict(time=20.0, batch_size=4, seq_len=16, patience=0, sample_every=0)
    trainer, whole = train_run(corpus, tmp_path / "whole", callback=lambda t: None, **settings)
    plan = trainer.plan
    assert plan.replans and plan.replans[0].at < plan.end
    assert plan.end == pytest.approx(plan.steps / 2, rel=0.1)  # half the steps...
    assert whole.stopped_by == "time"
    assert trainer.elapsed <= plan.seconds  # ...so it ends inside the budget
    recorded = json.loads((tmp_path / "whole" / checkpoint.CONFIG).read_text())["plan"]
    assert planning.Plan.from_dict(recorded) == plan

    # killed after the re-plan, resumed: it follows the recorded plan, loss for loss
    def stop(t):
        if t.step == plan.replans[0].at + 7:
            t.interrupt()

    monkeypatch.setattr(Trainer, "clock", PlannedClock(slower=2.0))
    _, first = train_run(corpus, tmp_path / "split", callback=stop, **settings)
    monkeypatch.setattr(Trainer, "clock", PlannedClock(slower=2.0))
    resumed, second = train_run(None, tmp_path / "split", resume=True)
    assert resumed.plan == plan
    assert first.losses + second.losses == whole.losses


def test_a_run_of_steps_keeps_its_evaluations_to_a_small_share():
    every, chars = planning.eval_settings(15, 32 * 64, 500_000, None, None)
    assert every == 15  # one evaluation, at the end, not one after every step
    assert chars == planning.MIN_EVAL_CHARS
    every, chars = planning.eval_settings(20_000, 32 * 64, 500_000, None, None)
    assert every == 1000 and chars == planning.EVAL_CHARS
    # what the user gives is kept
    assert planning.eval_settings(15, 2048, 500_000, 1, 50_000) == (1, 50_000)


def test_a_time_budget_run_is_repeated_exactly_from_its_recorded_plan(write, tmp_path,
                                                                      measured):
    from conftest import quiet

    from charrnn.training import prepare

    corpus = write("moby.txt", TEXT)
    trainer, first = train_run(corpus, tmp_path / "a", model=CHOSEN, time=3.0, batch_size=4,
                               seq_len=16, sample_every=0, eval_every=None)
    again = prepare.repeat(tmp_path / "a", None, tmp_path / "b", reporter=quiet())
    assert again.plan.repeat and again.model.config == trainer.model.config
    assert again.plan.replans == trainer.plan.replans  # every re-plan, followed
    second = again.run_loop()
    assert first.stopped_by == "time" and second.step == first.step
    assert second.losses == first.losses


def test_plan_from_refuses_settings_of_its_own_and_another_text(write, tmp_path, monkeypatch):
    from conftest import invoke

    corpus = write("moby.txt", TEXT)
    train_run(corpus, tmp_path / "a", max_steps=3)
    monkeypatch.chdir(tmp_path)
    result = invoke("train", "--plan-from", "a", "--hidden-size", "64")
    assert result.exit_code == 1
    assert result.stderr.strip() == ("charrnn: error: --plan-from repeats a with its own "
                                     "settings; only --device, --threads or --tensorboard can "
                                     "change, not --hidden-size")
    other = write("other.txt", TEXT.upper())
    result = invoke("train", str(other), "--plan-from", "a", "--out", "b")
    assert result.exit_code == 1 and "is not the text a trained on" in result.stderr
    result = invoke("train", "--plan-from", "a", "--out", "c", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    info = invoke("info", "a")
    assert "charrnn train --plan-from a --out NEW" in info.stdout


def test_the_dropout_rule_falls_between_where_the_grid_saw_dropout_help_and_hurt():
    from pathlib import Path

    fit = Path(__file__).resolve().parents[1] / "benchmarks" / "grid" / "fit.json"
    if not fit.exists():
        pytest.skip("benchmarks/grid/fit.json is absent")
    written = json.loads(fit.read_text())
    assert written["dropout_from"] == rule.DROPOUT_FROM
    assert written["dropout_hurt_below"] < rule.DROPOUT_FROM <= written["dropout_helped_from"]


def test_a_small_model_gets_no_dropout_even_at_many_passes():
    from charrnn.config import ModelConfig

    # tiny Shakespeare's 1M training characters, 18 passes: a 2x128 does not memorise them
    # (the grid: dropout 0.1 cost it 0.013 at 16 passes), a 2x384 does
    small = rule.parameters(ModelConfig(vocab_size=65, hidden_size=128))
    large = rule.parameters(ModelConfig(vocab_size=65, hidden_size=384))
    assert rule.dropout_for(18e6, 1e6, small) == 0.0
    assert rule.dropout_for(18e6, 1e6, large) > 0.0
    assert rule.dropout_for(1e9, 1e5, large) == rule.MAX_DROPOUT
