import io
import json
import math
import re

import pytest
import torch
from conftest import train_run

from charrnn import checkpoint
from charrnn.config import SampleConfig
from charrnn.errors import CharrnnError
from charrnn.sample import generate

TEXT = ("The quick brown fox jumps over the lazy dog. " * 3 + "\n") * 40


def greedy(run, prime, length):
    model, vocab, _ = checkpoint.load(run)
    return "".join(generate(model, vocab, prime, SampleConfig(temperature=0, length=length),
                            torch.Generator().manual_seed(0)))


def test_hello_learns_h_e_l_l_o(write, tmp_path):
    """The lectures' example: after "h", a trained model continues "ello"."""
    _, outcome = train_run(write("hello.txt", "hello"), tmp_path / "run", val_frac=0.0,
                           max_steps=150, lr=1e-2, batch_size=1, seq_len=4)
    assert outcome.best_val_loss < 0.05
    assert greedy(tmp_path / "run", "h", 4) == "ello"


def test_a_small_text_is_overfitted(write, tmp_path):
    _, outcome = train_run(write("fox.txt", TEXT), tmp_path / "run", val_frac=0.0,
                           max_steps=300, lr=1e-2, batch_size=4, seq_len=32,
                           model={"hidden_size": 64})
    assert outcome.best_val_loss < 0.1
    assert greedy(tmp_path / "run", "The quick", 35) == " brown fox jumps over the lazy dog."


def test_run_directory_holds_a_self_describing_checkpoint(write, tmp_path):
    _, outcome = train_run(write("fox.txt", TEXT), tmp_path / "run", max_steps=20, eval_every=10)
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} == {"config.json", "model.safetensors", "latest.pt",
                                               "metrics.jsonl", "samples.txt",
                                               ".lock"}  # (the lock's file)
    config = json.loads((run / "config.json").read_text())
    assert config["format_version"] == checkpoint.FORMAT_VERSION
    assert config["model"]["model"] == "lstm" and config["train"]["max_steps"] == 20
    assert config["vocab"] == sorted(set(TEXT)) and config["torch_version"]
    assert config["best_val_loss"] == pytest.approx(outcome.best_val_loss)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [10, 20]
    assert metrics[-1]["val_bpc"] == pytest.approx(metrics[-1]["val_loss"] / math.log(2))
    state = torch.load(run / "latest.pt", weights_only=True)
    assert state["step"] == 20


def test_save_then_load_gives_identical_logits(write, tmp_path):
    trainer, _ = train_run(write("fox.txt", TEXT), tmp_path / "run", max_steps=5, eval_every=5)
    loaded, vocab, _ = checkpoint.load(tmp_path / "run")
    x = torch.from_numpy(vocab.encode("The lazy dog").astype("int64"))[None]
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(trainer.model(x)[0], loaded(x)[0])


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_resume_after_n_steps_equals_an_uninterrupted_2n_step_run(write, tmp_path, kind):
    corpus = write("fox.txt", TEXT)
    settings = dict(max_steps=24, eval_every=5, batch_size=3, seq_len=8, warmup_steps=5)
    model = {"model": kind, "layers": 2, "dropout": 0.2}  # dropout: the RNG state must carry over
    _, whole = train_run(corpus, tmp_path / "whole", model=model, callback=lambda t: None,
                         **settings)

    def stop_at_12(trainer):
        if trainer.step == 12:
            trainer.interrupt()

    _, first = train_run(corpus, tmp_path / "split", model=model, callback=stop_at_12,
                         **settings)
    assert first.stopped_by == "interrupted" and first.step == 12
    _, second = train_run(None, tmp_path / "split", resume=True, callback=lambda t: None)
    assert second.step == 24
    assert first.losses + second.losses == whole.losses  # loss for loss, bit for bit

    def evaluations(run):
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [(r["step"], r["train_loss"], r["val_loss"]) for r in map(json.loads, lines)]

    assert evaluations(tmp_path / "split") == evaluations(tmp_path / "whole")


def test_unicode_corpus_trains_and_samples(write, tmp_path):
    text = "안녕하세요 세계! Ça va, naïve café? 🎉🐍 日本語のテキスト。\n" * 30
    _, outcome = train_run(write("u.txt", text), tmp_path / "run", max_steps=120, lr=1e-2,
                           batch_size=4, seq_len=32, model={"hidden_size": 64})
    assert outcome.best_val_loss < 1.0
    model, vocab, _ = checkpoint.load(tmp_path / "run")
    out = "".join(generate(model, vocab, "안녕", SampleConfig(length=200),
                           torch.Generator().manual_seed(3)))
    assert len(out) == 200 and set(out) <= set(text)
    assert "🎉" in greedy(tmp_path / "run", "Ça va, naïve café? ", 3)


def test_init_from_keeps_old_rows_and_adds_new_characters(write, tmp_path):
    from conftest import quiet

    from charrnn.config import TrainConfig
    from charrnn.training import prepare

    train_run(write("ab.txt", "abab\n" * 100), tmp_path / "base", max_steps=10, eval_every=10)
    base, base_vocab, _ = checkpoint.load(tmp_path / "base")
    trainer = prepare.new(str(write("xy.txt", "abxy\n" * 100)), tmp_path / "new",
                          TrainConfig(device="cpu", max_steps=1), init_from=tmp_path / "base",
                          reporter=quiet())
    assert trainer.vocab.chars == ("\n", "a", "b", "x", "y")
    new_weights = trainer.model.embed.weight
    for ch in "\nab":
        assert torch.equal(new_weights[trainer.vocab.chars.index(ch)],
                           base.embed.weight[base_vocab.chars.index(ch)])
    assert torch.equal(trainer.model.rnn.weight_hh_l0, base.rnn.weight_hh_l0)
    trainer.run_loop()


def test_an_existing_run_is_not_overwritten_silently(write, tmp_path):
    corpus = write("fox.txt", TEXT)
    train_run(corpus, tmp_path / "run", max_steps=2)
    with pytest.raises(CharrnnError, match="--resume"):
        train_run(corpus, tmp_path / "run", max_steps=2)


def test_resume_refuses_a_changed_corpus(write, tmp_path):
    corpus = write("fox.txt", TEXT)
    train_run(corpus, tmp_path / "run", max_steps=2)
    before = (tmp_path / "run" / "latest.pt").read_bytes()
    corpus.write_text(TEXT.upper())
    with pytest.raises(CharrnnError) as refused:
        train_run(None, tmp_path / "run", resume=True)
    run = tmp_path / "run"
    assert str(refused.value) == (
        f"{run} trained on {corpus}, whose text is not here as it was (changed, moved, or a "
        "folder or corpus not built on this machine); give it yourself to resume: charrnn "
        f"train {corpus} --resume {run}")
    with pytest.raises(CharrnnError) as refused:  # given on the command line: checked too
        train_run(corpus, tmp_path / "run", resume=True)
    assert str(refused.value) == (
        f"{corpus} is not the text {run} trained on (it changed since, or it is another file), "
        "so the run cannot resume exactly; give that text, or start a new run")
    assert (run / "latest.pt").read_bytes() == before  # nothing of the run was touched


def test_the_test_fraction_is_never_trained_or_validated_on(write, tmp_path):
    """The last --test-frac of the text (here the only place a 'Z' occurs) reaches neither the
    training windows nor the validation windows, and the model learns nothing of it."""
    body = TEXT * 3
    corpus = write("fox.txt", body + "Z" * (len(body) // 4))  # the last fifth: Zs alone
    trainer, _ = train_run(corpus, tmp_path / "run", max_steps=40, eval_every=20,
                           val_frac=0.1, test_frac=0.2, lr=1e-2)
    z = trainer.vocab.chars.index("Z")
    for streams in (trainer.train_streams, trainer.val_streams):
        steps = [streams.window(i) for i in range(streams.windows)]
        assert all((x != z).all() and (y != z).all() for x, y in steps)
    model, vocab, _ = checkpoint.load(tmp_path / "run")
    ids = torch.from_numpy(vocab.encode("The quick brown fox")).long()[None]
    p = torch.softmax(model(ids)[0][0, -1], -1)
    assert p[z] < 1 / len(vocab)  # 'Z' is no likelier than a guess: it was never seen


def validated(trainer) -> list[str]:
    """Each validation stream's text: its inputs over every window, then its last target."""
    s = trainer.val_streams
    inputs = [s.window(i)[0] for i in range(s.windows)]
    last = s.window(s.windows - 1)[1][:, -1]
    return [trainer.vocab.decode([*(int(c) for x in inputs for c in x[row]), int(last[row])])
            for row in range(s.held)]


# a validation text whose first half is unlike its second: its start alone would mislead
SPLIT_TEXT = TEXT * 9 + "=" * 2720 + ("Quiet quill! " * 210)[:2720]


def test_a_short_validation_reads_the_whole_validation_text_not_its_start(write, tmp_path):
    """With fewer validation characters than the validation text holds (a short budget's), they
    come from evenly spaced places across it, each target the character that follows: the loss
    estimates the whole text's, whatever its first part is (a code base's first files)."""
    corpus = write("split.txt", SPLIT_TEXT)
    trainer, _ = train_run(corpus, tmp_path / "run", max_steps=2, eval_chars=640, seq_len=16)
    pieces = validated(trainer)
    assert all(piece in SPLIT_TEXT[-5440:] for piece in pieces)  # true text, true next characters
    assert set(pieces[0]) == {"="} and "Q" in pieces[-1]  # from its start to its end
    assert 600 <= sum(len(p) - 1 for p in pieces) <= 640


def test_a_run_from_before_spread_validation_resumes_on_the_start_it_validated_on(write,
                                                                                  tmp_path):
    """A run whose config.json has no eval_from (made before validation was spread) resumes
    validating on the start of its validation text, as it did: its losses stay comparable."""
    from conftest import edit_config

    corpus = write("split.txt", SPLIT_TEXT)
    train_run(corpus, tmp_path / "run", max_steps=2, eval_chars=640, seq_len=16)
    edit_config(tmp_path / "run", lambda c: c["train"].pop("eval_from"))
    trainer, _ = train_run(corpus, tmp_path / "run", resume=True, max_steps=4)
    assert trainer.cfg.eval_from == "start"
    assert all(set(piece) == {"="} for piece in validated(trainer))


@pytest.mark.slow
def test_a_time_budget_ends_the_run_at_its_planned_end_near_its_budget(write, tmp_path):
    """On the real clock (the planning itself is tested on faked ones, tests/test_budget.py):
    a run planned again at every evaluation ends at its planned end, between 0.9 and 1.05 of
    its budget (4 s, set-up included: a test machine's noise is a larger share of so little)."""
    trainer, outcome = train_run(write("fox.txt", TEXT), tmp_path / "run", time=4.0,
                                 eval_every=None, sample_every=0, patience=0)
    plan = trainer.plan
    assert outcome.stopped_by == "time" and outcome.step == plan.end and plan.replans
    took = plan.setup_seconds + trainer.elapsed
    assert 0.9 * plan.seconds <= took <= 1.05 * plan.seconds, took


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_every_optimizer_trains_and_resumes_exactly(write, tmp_path, optimizer):
    corpus = write("fox.txt", TEXT)
    settings = dict(max_steps=30, eval_every=10, lr=3e-3, optimizer=optimizer)
    _, whole = train_run(corpus, tmp_path / "whole", callback=lambda t: None, **settings)
    assert whole.losses[-1][1] < whole.losses[0][1] - 0.5  # it learns

    def stop_at_12(trainer):
        if trainer.step == 12:
            trainer.interrupt()

    _, first = train_run(corpus, tmp_path / "split", callback=stop_at_12, **settings)
    _, second = train_run(None, tmp_path / "split", resume=True)
    assert first.losses + second.losses == whole.losses  # its moments saved and restored
    assert json.loads((tmp_path / "whole" / "config.json").read_text())["train"][
        "optimizer"] == optimizer


def test_epochs_stop_the_run_after_that_many_passes(write, tmp_path):
    trainer, outcome = train_run(write("fox.txt", TEXT), tmp_path / "run", epochs=1.5,
                                 batch_size=4, seq_len=16)
    s = trainer.train_streams
    assert outcome.stopped_by == "epochs"
    assert outcome.step == math.ceil(1.5 * s.windows)  # one and a half passes, no more
    assert 1.5 <= trainer.epochs_done() < 1.5 + 1 / s.windows


def test_with_no_stop_given_a_run_gets_the_default_budget(write, tmp_path, monkeypatch):
    from charrnn.budget import calibrate
    from charrnn.budget.speed import Speed
    from charrnn.config import DEFAULT_TIME

    monkeypatch.setattr(calibrate, "measure", lambda *a, **k: Speed(train=1e5, eval=3e5))
    seen = {}

    def stop_at_once(trainer):
        seen["plan"] = trainer.plan
        trainer.interrupt()

    trainer, outcome = train_run(write("fox.txt", TEXT), tmp_path / "run", callback=stop_at_once,
                                 eval_every=None)
    assert seen["plan"].seconds == DEFAULT_TIME == 600  # ten minutes
    assert trainer.cfg.time is None and trainer.cfg.max_steps is None


def test_a_plateau_decays_the_learning_rate_then_stops_the_run(write, tmp_path):
    _, outcome = train_run(write("fox.txt", TEXT), tmp_path / "run", lr=1e-9, warmup_steps=0,
                           eval_every=1, patience=2, max_decays=2, max_steps=100)
    # step 1 is the best; each two evaluations without a new best halve the rate, and the
    # third such plateau, after two fruitless decays, stops the run
    assert outcome.stopped_by == "patience" and outcome.step == 7
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    rates = [json.loads(line)["lr"] for line in lines]
    # (the cosine over the planned 100 steps moves the rate by under 1% a step)
    assert rates[3] == pytest.approx(rates[2] / 2, rel=0.02)
    assert rates[5] == pytest.approx(rates[2] / 4, rel=0.02)


def test_mixed_precision_trains_and_resumes(write, tmp_path):
    corpus = write("fox.txt", TEXT)

    def stop_at_20(trainer):
        if trainer.step == 20:
            trainer.interrupt()

    trainer, first = train_run(corpus, tmp_path / "run", amp=True, max_steps=40, eval_every=10,
                               lr=1e-2, batch_size=4, seq_len=32, callback=stop_at_20)
    assert trainer.runner.amp_dtype == torch.bfloat16 and first.stopped_by == "interrupted"
    _, second = train_run(None, tmp_path / "run", resume=True)
    assert second.step == 40 and second.best_val_loss < 2.0
    model, _, config = checkpoint.load(tmp_path / "run")
    assert config["train"]["amp"] is True
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32


def test_off_a_terminal_the_log_has_a_line_every_30_seconds(monkeypatch):
    from rich.console import Console

    from charrnn.training import progress

    clock = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    console = Console(record=True, width=200, file=io.StringIO())
    reporter = progress.reporter_for(console)
    assert type(reporter) is progress.Reporter  # not a live display: stderr is no terminal
    figures = {"step": 1, "epoch": 0.1, "train_loss": 2.0, "chars_per_sec": 1000.0,
               "lr": 1e-3, "elapsed": 1.0, "eta": 60.0, "progress": 0.1}
    said = []
    for t in range(0, 95, 5):  # a step every 5 seconds for 90 seconds
        clock[0] = 1000.0 + t
        reporter.step({**figures, "step": t})
        said.append(console.export_text(clear=True).strip())
    lines = [(t, s) for t, s in zip(range(0, 95, 5), said) if s]
    assert [t for t, _ in lines] == [0, 30, 60, 90]
    assert all(s.startswith(f"step {t} ") for t, s in lines)


def test_samples_while_training_are_kept_with_their_step_and_can_be_turned_off(write,
                                                                               tmp_path):
    corpus = write("fox.txt", TEXT)

    def stop_at_7(trainer):
        if trainer.step == 7:
            trainer.interrupt()

    train_run(corpus, tmp_path / "run", max_steps=12, eval_every=3, callback=stop_at_7)
    samples = (tmp_path / "run" / "samples.txt").read_text()
    assert re.findall(r"^--- step (\d+) ---$", samples, flags=re.M) == ["3", "6"]
    train_run(None, tmp_path / "run", resume=True)  # the resumed run samples on from step 9
    samples = (tmp_path / "run" / "samples.txt").read_text()
    assert re.findall(r"^--- step (\d+) ---$", samples, flags=re.M) == ["3", "6", "9", "12"]
    chunks = re.split(r"^--- step \d+ ---\n", samples, flags=re.M)[1:]
    assert all(len(chunk.rstrip("\n")) > 0 for chunk in chunks)
    train_run(corpus, tmp_path / "quiet", max_steps=6, eval_every=3, sample_every=0)
    assert not (tmp_path / "quiet" / "samples.txt").exists()


def test_float16_mixed_precision_scales_the_loss_and_resumes_exactly(write, tmp_path,
                                                                     monkeypatch):
    """--amp on a device without bfloat16 runs in float16 with loss scaling. A CPU has
    bfloat16, so float16 is asked for here; torch's CPU float16 LSTM kernel does not exist, so
    the vanilla RNN (which has one) is trained."""
    from charrnn.engine import step

    monkeypatch.setattr(step, "amp_dtype", lambda device: torch.float16)
    corpus = write("fox.txt", TEXT)
    settings = dict(amp=True, max_steps=30, eval_every=10, lr=1e-2, batch_size=4, seq_len=32)

    def stop_at_15(trainer):
        if trainer.step == 15:
            trainer.interrupt()

    trainer, whole = train_run(corpus, tmp_path / "whole", model={"model": "rnn"}, **settings)
    assert trainer.runner.amp_dtype == torch.float16 and trainer.runner.scaler.is_enabled()
    assert 0 < trainer.runner.scaler.get_scale() < math.inf
    losses = [loss for _, loss in whole.losses]
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0]
    state = checkpoint.load_state(tmp_path / "whole")
    assert state["scaler"]["scale"] == trainer.runner.scaler.get_scale()  # saved, to resume
    _, first = train_run(corpus, tmp_path / "split", model={"model": "rnn"}, callback=stop_at_15,
                         **settings)
    _, second = train_run(None, tmp_path / "split", resume=True)
    assert first.losses + second.losses == whole.losses


def test_samples_while_training_change_nothing_of_the_training(write, tmp_path):
    corpus = write("fox.txt", TEXT)
    for name, every in (("sampled", 1), ("quiet", 0)):
        train_run(corpus, tmp_path / name, max_steps=12, eval_every=3, sample_every=every,
                  model={"dropout": 0.2})  # dropout draws from the training's generator
    assert (tmp_path / "sampled" / "samples.txt").exists()

    def losses(name):
        return [(m["step"], m["train_loss"], m["val_loss"]) for m in
                map(json.loads, (tmp_path / name / "metrics.jsonl").read_text().splitlines())]

    assert losses("sampled") == losses("quiet")
    sampled, _, _ = checkpoint.load(tmp_path / "sampled")
    quiet, _, _ = checkpoint.load(tmp_path / "quiet")
    for (name, a), b in zip(sampled.state_dict().items(), quiet.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_sample_shown_while_training_has_no_raw_control_characters():
    from rich.console import Console

    from charrnn.training.progress import Reporter

    out = io.StringIO()
    Reporter(Console(file=out, width=100)).sample(40, "ok \x1b[31mred\x07\nline two\n")
    shown = out.getvalue()
    assert "sample at step 40:" in shown and "\x1b[31m" not in shown and "\x07" not in shown
    assert "line two" in shown


def test_tensorboard_events_are_written_or_the_missing_extra_is_named(write, tmp_path,
                                                                      monkeypatch):
    import builtins

    corpus = write("fox.txt", TEXT)
    real_import = builtins.__import__

    def without_tensorboard(name, *args, **kwargs):
        if name == "tensorboard" or name.startswith("tensorboard."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_tensorboard)
    with pytest.raises(CharrnnError, match=r"pip install 'charrnn\[tensorboard\]'"):
        train_run(corpus, tmp_path / "missing", max_steps=2, tensorboard=True)
    assert not (tmp_path / "missing").exists()  # it said so before anything was written
    monkeypatch.undo()
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_run(corpus, tmp_path / "run", max_steps=6, eval_every=3, tensorboard=True)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("val_loss")] == [3, 6]
    assert {"train_loss", "val_bpc", "lr"} <= set(events.Tags()["scalars"])
