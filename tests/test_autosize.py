"""The automatic choice of model and settings: the rule, the calibration cache, the plan."""

import json

import pytest

from charrnn import autosize, checkpoint
from charrnn.autosize import Speed

from conftest import train_run

CHOSEN = {"layers": None, "hidden_size": None, "embedding_size": None, "dropout": None}
TEXT = "Call me Ishmael. Some years ago, never mind how long precisely.\n" * 80


def speeds_like_a_cpu(scale: float = 1.0) -> dict:
    """Speeds that fall with size as a CPU's do: about 1 / parameters."""
    return {h: Speed(train=scale * 1.1e5 * (128 / h) ** 1.8, eval=scale * 3e5 * (128 / h) ** 1.8)
            for h in autosize.HIDDEN_SIZES}


def choose(**kw):
    args = dict(model="lstm", vocab_size=65, corpus_chars=1_000_000, given_model={},
                given_train={})
    return autosize.choose(**{**args, **kw})


def test_more_time_never_picks_a_smaller_model():
    for scale in (0.05, 0.3, 1.0, 10.0, 300.0):  # a slow laptop to a large GPU
        sizes = [choose(seconds=s, speeds=speeds_like_a_cpu(scale)).model["hidden_size"]
                 for s in (10, 45, 120, 240, 600, 1800, 7200)]
        assert sizes == sorted(sizes), (scale, sizes)
    sizes = [choose(chars=c).model["hidden_size"] for c in (10**5, 10**6, 10**7, 10**8)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_a_faster_device_never_picks_a_smaller_model():
    sizes = [choose(seconds=120, speeds=speeds_like_a_cpu(s)).model["hidden_size"]
             for s in (0.1, 0.3, 1, 3, 10)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_a_tiny_corpus_gets_more_dropout_than_a_huge_one():
    tiny = choose(chars=20_000_000, corpus_chars=100_000)
    huge = choose(chars=20_000_000, corpus_chars=100_000_000)
    assert tiny.model["dropout"] > huge.model["dropout"] == 0.0
    assert "passes over the corpus" in tiny.reason


def test_a_tiny_corpus_caps_the_model_size():
    tiny = choose(chars=10**9, corpus_chars=50_000)
    big = choose(chars=10**9, corpus_chars=50_000_000)
    assert tiny.model["hidden_size"] < big.model["hidden_size"]


def test_the_settings_a_user_gives_are_kept_and_the_rest_chosen_around_them():
    c = choose(seconds=60, speeds=speeds_like_a_cpu(),
               given_model={"layers": 3, "dropout": 0.25}, given_train={"lr": 1e-3})
    assert c.model["layers"] == 3 and c.model["dropout"] == 0.25 and c.train["lr"] == 1e-3
    assert set(c.chosen) == {"hidden_size", "embedding_size", "batch_size", "seq_len"}
    fixed = choose(chars=10**8, given_model={"hidden_size": 48})
    assert fixed.model["hidden_size"] == 48


def test_the_reason_names_the_size_the_budget_and_the_speed():
    c = choose(seconds=45, speeds=speeds_like_a_cpu(), where="a test CPU")
    h = c.model["hidden_size"]
    assert c.reason.startswith(f"2x{h} lstm: about ") and "in 45 s at" in c.reason
    assert "chars/s on a test CPU" in c.reason
    assert c.chars == pytest.approx(speeds_like_a_cpu()[h].train * 45 * autosize.TRAIN_SHARE,
                                    abs=1)


def test_the_plan_fills_the_budget_and_keeps_evaluation_to_a_small_share():
    from charrnn.config import TrainConfig

    cfg = TrainConfig(batch_size=32, seq_len=64, lr=4e-3)
    p = autosize.plan(240, Speed(train=20_000, eval=60_000), cfg, val_chars=111_000)
    evaluation = autosize.EVALUATIONS * p.eval_chars / 60_000
    training = p.steps * 32 * 64 / 20_000
    assert evaluation <= autosize.EVAL_SHARE * 240 + 1e-9
    assert 0.85 * 240 <= training + evaluation <= 240
    assert p.eval_every == p.steps // autosize.EVALUATIONS
    short = autosize.plan(10, Speed(train=20_000, eval=60_000), cfg, val_chars=111_000)
    assert short.eval_chars < p.eval_chars  # a short budget validates on less text


# ---------------------------------------------------------------------------------------------
# Calibration through real runs (with the measurement faked: the plan is then fixed)


@pytest.fixture
def measured(monkeypatch):
    """Replace the timing of a size by a fixed speed; record which sizes were timed."""
    calls = []

    def measure(device, mc, batch, seq, amp, min_seconds=0.25):
        calls.append(mc.hidden_size)
        # far slower than any machine, even a loaded one, runs these tiny models, so the
        # planned steps end the run long before the clock's safety stop
        return Speed(train=6e4 / mc.hidden_size, eval=2e5 / mc.hidden_size)

    monkeypatch.setattr(autosize, "measure", measure)
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
    assert config["plan"]["steps"] == first.setup.total_steps
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
                                     model={"hidden_size": 16}, time=10.0,
                                     batch_size=4, seq_len=16)
        assert outcome.stopped_by == "time"
        assert json.loads(cache.read_text())["format"] == autosize.CACHE_FORMAT
    cache.unlink()
    train_run(corpus, tmp_path / "deleted", model={"hidden_size": 16}, time=10.0, batch_size=4,
              seq_len=16)
    assert cache.exists()


def test_same_seed_under_a_time_budget_gives_the_same_losses(write, tmp_path, measured):
    corpus = write("moby.txt", TEXT)
    settings = dict(time=20.0, batch_size=4, seq_len=16, eval_every=10, patience=0)
    _, a = train_run(corpus, tmp_path / "a", callback=lambda t: None, **settings)
    _, b = train_run(corpus, tmp_path / "b", callback=lambda t: None, **settings)
    assert a.stopped_by == b.stopped_by == "time"
    assert a.losses == b.losses and len(a.losses) > 20


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


def test_the_clock_stops_a_run_that_overruns_its_plan(write, tmp_path, monkeypatch):
    # a calibration that promised far more speed than the machine has
    monkeypatch.setattr(autosize, "measure", lambda *a, **k: Speed(train=1e9, eval=1e9))
    trainer, outcome = train_run(write("moby.txt", TEXT), tmp_path / "run", time=0.5,
                                 batch_size=4, seq_len=16)
    assert outcome.stopped_by == "clock" and outcome.step < trainer.setup.total_steps
    assert autosize.SAFETY * 0.5 <= trainer.elapsed < autosize.SAFETY * 0.5 + 1.0
    assert (tmp_path / "run" / checkpoint.WEIGHTS).exists()  # it ends with an evaluation


def test_the_rule_uses_the_fit_written_down_in_benchmarks():
    from pathlib import Path

    fit = Path(__file__).resolve().parents[1] / "benchmarks" / "grid" / "fit.json"
    if not fit.exists():
        pytest.skip("benchmarks/grid/fit.json is absent")
    written = json.loads(fit.read_text())
    assert autosize.CHARS_PER_PARAMETER == written["chars_per_parameter"]
    assert autosize.REPEAT_DECAY == written["repeat_decay"]
