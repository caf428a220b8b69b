"""Nothing a user makes is lost: crashes, signals, a second writer, divergence, hostile text."""

import errno
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from charrnn import checkpoint
from charrnn.cli import app
from charrnn.errors import CharrnnError

from conftest import train_run

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind.\n" * 80
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def start_training(corpus: Path, run: Path, cache: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "CHARRNN_CACHE_DIR": str(cache)}
    args = [sys.executable, "-m", "charrnn", "train", str(corpus), "--out", str(run),
            "--hidden-size", "32", "--layers", "1", "--batch-size", "4", "--seq-len", "16",
            "--eval-every", "3", "--time", "2m", "--patience", "0", "--device", "cpu", *extra]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_sigkill_at_random_moments_always_leaves_a_resumable_run(write, tmp_path, cache_dir):
    corpus = write("hamlet.txt", TEXT)
    rng = random.Random(7)
    for attempt in range(4):
        run = tmp_path / f"run{attempt}"
        proc = start_training(corpus, run, cache_dir)
        wait_for(run / checkpoint.CONFIG, proc)
        time.sleep(rng.uniform(0.0, 1.5))  # anywhere: mid-step, mid-evaluation, mid-save
        proc.kill()
        proc.wait()
        state = checkpoint.load_state(run)  # the latest checkpoint loads...
        resumed = invoke("train", "--resume", run, "--max-steps", state["step"] + 4)
        assert resumed.exit_code == 0, resumed.output  # ...and resumes
        assert checkpoint.load_state(run)["step"] == state["step"] + 4
        assert not list(run.glob(".*.tmp"))  # a save the kill cut short is cleaned up


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143),
                                       (signal.SIGHUP, 129)])
def test_ctrl_c_sigterm_and_sighup_save_a_checkpoint_and_exit_128_plus_the_signal(write, tmp_path, cache_dir,
                                                                  sig, code):
    run = tmp_path / "run"
    proc = start_training(write("hamlet.txt", TEXT), run, cache_dir)
    wait_for(run / checkpoint.METRICS, proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    said = [line for line in stderr.splitlines() if line.startswith("interrupted at step")]
    assert len(said) == 1 and "Traceback" not in stderr
    step = int(said[0].split()[3].rstrip(":"))
    assert checkpoint.load_state(run)["step"] == step


def test_a_crash_during_a_save_leaves_the_previous_checkpoint_whole(write, tmp_path,
                                                                    monkeypatch):
    trainer, _ = train_run(write("hamlet.txt", TEXT), tmp_path / "run", max_steps=6,
                           eval_every=3)
    before = (tmp_path / "run" / checkpoint.LATEST).read_bytes()
    real_save = torch.save

    def dies_halfway(obj, f, *args, **kwargs):
        real_save({"partial": torch.zeros(10)}, f)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(CharrnnError, match="no space left on the device holding .*latest.pt; "
                       "the last good checkpoint .* is kept"):
        trainer.save_latest()
    monkeypatch.setattr(torch, "save", real_save)
    assert (tmp_path / "run" / checkpoint.LATEST).read_bytes() == before
    assert not list((tmp_path / "run").glob(".*.tmp"))
    assert checkpoint.load_state(tmp_path / "run")["step"] == 6


def test_one_writer_per_run_and_a_dead_writer_leaves_no_lock(write, tmp_path):
    corpus = write("hamlet.txt", TEXT)
    run = tmp_path / "run"
    with checkpoint.RunLock(run):  # a live trainer holds the run
        result = invoke("train", corpus, "--out", run, "--max-steps", 2)
        assert result.exit_code == 1
        assert "is being trained by another charrnn process" in result.stderr
        assert not (run / checkpoint.CONFIG).exists()
    # the lock went with its holder: training now goes ahead, and leaves no lock file
    result = invoke("train", corpus, "--out", run, "--max-steps", 2, "--hidden-size", 16)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in run.iterdir()) == sorted(
        [checkpoint.CONFIG, checkpoint.WEIGHTS, checkpoint.LATEST, checkpoint.METRICS])


def test_overwrite_replaces_every_file_of_the_old_run(write, tmp_path):
    corpus = write("hamlet.txt", TEXT)
    train_run(corpus, tmp_path / "run", max_steps=3, eval_every=3)
    other = write("other.txt", "xyz\n" * 300)
    from charrnn import prepare
    from charrnn.config import TrainConfig
    from conftest import quiet

    trainer = prepare.new(str(other), tmp_path / "run", TrainConfig(device="cpu", max_steps=1),
                          {"hidden_size": 16}, overwrite=True, reporter=quiet())
    assert not (tmp_path / "run" / checkpoint.WEIGHTS).exists()  # the old best model is gone
    trainer.release()


def test_divergence_stops_with_advice_and_keeps_the_last_good_checkpoint(write, tmp_path):
    corpus = write("hamlet.txt", TEXT)
    run = tmp_path / "run"
    trainer, _ = train_run(corpus, run, max_steps=4, eval_every=2)
    good = (run / checkpoint.WEIGHTS).read_bytes()
    with torch.no_grad():
        trainer.model.rnn.weight_hh_l0.fill_(float("nan"))
    with pytest.raises(CharrnnError, match=r"diverged at step 4 .*lower --lr"):
        trainer._evaluate_and_save(0.0)
    assert (run / checkpoint.WEIGHTS).read_bytes() == good
    state = checkpoint.load_state(run)
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_a_huge_learning_rate_diverges_with_a_clear_error(write, tmp_path):
    result = invoke("train", write("hamlet.txt", TEXT), "--out", tmp_path / "run",
                    "--lr", "1e6", "--grad-clip", "0", "--warmup-steps", "0", "--eval-every", 2,
                    "--max-steps", 60, "--hidden-size", 32)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("charrnn: error: training diverged") and "--lr" in lines[-1]
    state = checkpoint.load_state(tmp_path / "run")
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_resume_restores_early_stopping_and_the_time_budget(write, tmp_path):
    corpus = write("hamlet.txt", TEXT)

    def stop_at_5(trainer):
        if trainer.step == 5:
            trainer.interrupt()

    first, _ = train_run(corpus, tmp_path / "run", max_steps=50, eval_every=2, patience=7,
                         callback=stop_at_5)
    saved = checkpoint.load_state(tmp_path / "run")
    assert saved["elapsed"] > 0 and saved["schedule"] == first.schedule.state_dict()
    from charrnn import prepare
    from conftest import quiet
    resumed = prepare.resume(tmp_path / "run", reporter=quiet())
    assert resumed.elapsed == saved["elapsed"] and resumed.best_val_loss == first.best_val_loss
    assert resumed.schedule == first.schedule and resumed.cfg.patience == 7
    resumed.release()


# ---------------------------------------------------------------------------------------------
# Hostile text


def test_sample_writes_raw_text_by_default_and_shows_controls_with_safe(write, tmp_path):
    text = "\x1b[31mred\x1b[0m [bold]x[/] \u202eevil\n" * 200
    train_run(write("hostile.txt", text), tmp_path / "run", max_steps=150, lr=1e-2,
              batch_size=4, seq_len=32, model={"hidden_size": 64})
    raw = invoke("sample", tmp_path / "run", "--prime", "\x1b[31mred", "--length", 200,
                 "--temp", 0.5, "--seed", 1)
    assert raw.exit_code == 0 and "\x1b" in raw.stdout  # raw: exactly what the model wrote
    safe = invoke("sample", tmp_path / "run", "--prime", "\x1b[31mred", "--length", 200,
                  "--temp", 0.5, "--seed", 1, "--safe")
    assert "\x1b" not in safe.stdout and "\u202e" not in safe.stdout
    assert "␛[31mred" in safe.stdout and "[bold]x[/]" in safe.stdout
    assert safe.stdout.count("\n") == raw.stdout.count("\n")  # newlines stay newlines
    shown = invoke("inspect-cells", tmp_path / "run", "--color", "always", "--length", 100)
    painted = re.sub(r"\x1b\[[0-9;]*m", "", shown.stdout)  # the colours Rich added
    assert shown.exit_code == 0 and "␛[31m" in painted
    assert "\x1b" not in painted and "\u202e" not in painted


def test_lone_surrogates_from_odd_bytes_train_and_sample(write, tmp_path):
    corpus = write("odd.txt", b"caf\xe9 au lait \xff\xfe ok\n" * 100)
    run = tmp_path / "run"
    result = invoke("train", corpus, "--out", run, "--errors", "surrogateescape",
                    "--max-steps", 20, "--hidden-size", 16, "--eval-every", 10)
    assert result.exit_code == 0, result.output
    assert "\udce9" in json.loads((run / "config.json").read_text())["vocab"]
    sampled = invoke("sample", run, "--length", 300, "--seed", 0, "--temp", 1.5)
    assert sampled.exit_code == 0
    assert invoke("sample", run, "--length", 300, "--seed", 0, "--safe").exit_code == 0


# ---------------------------------------------------------------------------------------------
# Odd corpora


def test_a_one_character_corpus_is_a_clear_error(write, tmp_path):
    result = invoke("train", write("one.txt", "x"), "--out", tmp_path / "run")
    assert result.exit_code == 1 and "has 1 character; charrnn needs at least 2" in result.stderr


@pytest.mark.parametrize("name, content", [
    ("two.txt", "ab"),
    ("crlf.txt", "line one\r\nline two\r\n" * 50),
    ("bom.txt", "\ufeff" + "with a byte-order mark\n" * 50),
    ("cjk.txt", "".join(chr(0x4E00 + i) for i in range(20_000)) * 2),
])
def test_odd_corpora_train_and_sample(write, tmp_path, name, content):
    corpus = write(name, content)
    run = tmp_path / "run"
    result = invoke("train", corpus, "--out", run, "--max-steps", 4, "--eval-every", 2,
                    "--hidden-size", 16, "--embedding-size", 8)
    assert result.exit_code == 0, result.output
    vocab = json.loads((run / "config.json").read_text())["vocab"]
    assert "\ufeff" not in vocab
    if name == "crlf.txt":
        assert "\r" in vocab
    if name == "cjk.txt":
        assert len(vocab) == 20_000
    sampled = invoke("sample", run, "--length", 50, "--seed", 0)
    assert sampled.exit_code == 0 and len(sampled.stdout) == 51


def test_one_line_of_50_mb_without_a_newline_trains(write, tmp_path):
    corpus = tmp_path / "line.txt"
    corpus.write_bytes(b"abcdefghij" * 5_000_000)
    result = invoke("train", corpus, "--out", tmp_path / "run", "--max-steps", 3,
                    "--eval-every", 3, "--eval-chars", 5000, "--hidden-size", 16)
    assert result.exit_code == 0, result.output
    shown = invoke("inspect-cells", tmp_path / "run", "--length", 500, "--color", "never")
    assert shown.exit_code == 0


def test_invalid_utf8_names_the_byte_and_replace_goes_on(write, tmp_path):
    corpus = write("bad.txt", b"fine text " * 1000 + b"\xc3\x28" + b" more" * 100)
    result = invoke("train", corpus, "--out", tmp_path / "run", "--max-steps", 2)
    assert result.exit_code == 1 and "not valid utf-8 at byte 10000" in result.stderr
    result = invoke("train", corpus, "--out", tmp_path / "run", "--max-steps", 2,
                    "--errors", "replace", "--hidden-size", 16)
    assert result.exit_code == 0, result.output
    assert "\ufffd" in json.loads((tmp_path / "run" / "config.json").read_text())["vocab"]
