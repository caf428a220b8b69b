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
from conftest import invoke, train_run

from charrnn import checkpoint
from charrnn.errors import CharrnnError

pytestmark = pytest.mark.slow  # end to end: processes, signals, real clocks

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind.\n" * 80



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
    for attempt in range(3):
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


def test_a_run_killed_and_resumed_matches_an_uninterrupted_one_loss_for_loss(write, tmp_path,
                                                                             cache_dir):
    corpus = write("hamlet.txt", TEXT * 4)
    env = {**os.environ, "CHARRNN_CACHE_DIR": str(cache_dir)}
    args = ["--hidden-size", "128", "--layers", "2", "--batch-size", "16", "--seq-len", "32",
            "--eval-every", "20", "--max-steps", "120", "--seed", "4", "--device", "cpu",
            "--threads", "1"]
    whole = subprocess.run([sys.executable, "-m", "charrnn", "train", str(corpus), "--out",
                            str(tmp_path / "whole"), *args], env=env, capture_output=True,
                           text=True)
    assert whole.returncode == 0, whole.stderr
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "train", str(corpus), "--out",
                             str(killed), *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    wait_for(killed / checkpoint.METRICS, proc, timeout=120)
    proc.kill()
    proc.wait()
    at = checkpoint.load_state(killed)["step"]
    assert 0 < at < 120  # killed mid-run
    resumed = invoke("train", "--resume", killed)
    assert resumed.exit_code == 0, resumed.output

    def losses(run):
        return [(m["step"], m["train_loss"], m["val_loss"]) for m in
                map(json.loads, (run / checkpoint.METRICS).read_text().splitlines())]

    assert losses(killed) == losses(tmp_path / "whole")  # every evaluation, exactly
    assert len(losses(killed)) == 6


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143),
                                       (signal.SIGHUP, 129)])
def test_ctrl_c_sigterm_and_sighup_save_a_checkpoint_and_exit_128_plus_the_signal(
        write, tmp_path, cache_dir, sig, code):
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


def test_one_writer_per_run_and_a_killed_writer_leaves_no_lock(write, tmp_path, cache_dir):
    corpus = write("hamlet.txt", TEXT)
    run = tmp_path / "run"
    writer = start_training(corpus, run, cache_dir)  # a live trainer, in its own process
    wait_for(run / checkpoint.METRICS, writer)
    result = invoke("train", "--resume", run, "--max-steps", 10_000)
    assert result.exit_code == 1
    assert "is being trained by another charrnn process" in result.stderr
    writer.kill()  # SIGKILL: no chance to release anything
    writer.wait()
    # the lock went with its holder: training goes on, and no lock file is left
    step = checkpoint.load_state(run)["step"]
    result = invoke("train", "--resume", run, "--max-steps", step + 2)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in run.iterdir()) == sorted([*checkpoint.RUN_FILES,
                                                            checkpoint.LOCK])


def test_sigkill_in_the_middle_of_a_real_save_leaves_the_previous_checkpoint(write, tmp_path,
                                                                             cache_dir):
    corpus = write("hamlet.txt", TEXT)
    caught = 0
    for attempt in range(6):
        run = tmp_path / f"run{attempt}"
        # a model large enough (about 40 MB of training state) that a save takes a while
        proc = start_training(corpus, run, cache_dir, "--hidden-size", "640", "--eval-every",
                              "1")
        wait_for(run / checkpoint.CONFIG, proc, timeout=120)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if any(name.startswith(".latest.pt.") for name in os.listdir(run)):
                proc.kill()  # while latest.pt's temporary file is being written
                caught += 1
                break
        proc.kill()
        proc.wait()
        state = checkpoint.load_state(run)  # the previous checkpoint, whole
        resumed = invoke("train", "--resume", run, "--max-steps", state["step"] + 1)
        assert resumed.exit_code == 0, resumed.output
        assert not list(run.glob(".*.tmp"))
        if caught >= 2:
            break
    assert caught >= 2, "never caught a save in progress"


def test_overwrite_replaces_every_file_of_the_old_run(write, tmp_path):
    corpus = write("hamlet.txt", TEXT)
    run = tmp_path / "run"
    train_run(corpus, run, max_steps=6, eval_every=2)
    old = {name: (run / name).read_bytes() for name in checkpoint.RUN_FILES}
    other = write("other.txt", "xyz\n" * 300)
    result = invoke("train", other, "--out", run, "--overwrite", "--max-steps", 3,
                    "--hidden-size", 16, "--eval-every", 3)
    assert result.exit_code == 0, result.output
    for name in checkpoint.RUN_FILES:  # every file is the new run's, none is left from the old
        assert (run / name).read_bytes() != old[name], name
    config = json.loads((run / checkpoint.CONFIG).read_text())
    assert config["corpus"]["name"] == "other" and config["vocab"] == ["\n", "x", "y", "z"]
    assert [json.loads(line)["step"] for line in
            (run / checkpoint.METRICS).read_text().splitlines()] == [3]
    assert checkpoint.load_state(run)["step"] == 3
    model, vocab, _ = checkpoint.load(run)
    assert model.config.hidden_size == 16 and len(vocab) == 4


def test_overwrite_keeps_the_old_run_when_the_new_one_cannot_be_built(write, tmp_path):
    corpus = write("hamlet.txt", TEXT)
    run = tmp_path / "run"
    train_run(corpus, run, max_steps=4, eval_every=2)
    before = {name: (run / name).read_bytes() for name in checkpoint.RUN_FILES}
    result = invoke("train", corpus, "--out", run, "--overwrite", "--max-steps", 1,
                    "--hidden-size", 60000, "--layers", 8)  # 216 billion parameters
    assert result.exit_code == 1 and "does not fit in the memory" in result.stderr
    assert {name: (run / name).read_bytes() for name in checkpoint.RUN_FILES} == before


def test_divergence_stops_with_advice_and_keeps_the_last_good_checkpoint(write, tmp_path):
    corpus = write("hamlet.txt", TEXT)
    run = tmp_path / "run"
    saved = {}

    def poison_after_step_3(trainer):  # the evaluation at step 4 meets NaN weights
        if trainer.step == 3:
            saved["good"] = (run / checkpoint.WEIGHTS).read_bytes()
            with torch.no_grad():
                trainer.model.rnn.weight_hh_l0.fill_(float("nan"))

    with pytest.raises(CharrnnError, match=r"diverged at step 4 .*lower --lr"):
        train_run(corpus, run, max_steps=6, eval_every=2, callback=poison_after_step_3)
    assert (run / checkpoint.WEIGHTS).read_bytes() == saved["good"]
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


def test_resume_in_the_middle_of_a_plateau_continues_it_exactly(write, tmp_path):
    corpus = write("hamlet.txt", TEXT)
    # a rate so small that no evaluation after the first is a new best: a plateau from step 4,
    # a decay at step 8 (patience 3), and at step 13 two more evaluations counted towards the next
    settings = dict(max_steps=30, eval_every=2, patience=3, max_decays=5, lr=1e-7,
                    warmup_steps=0)

    def stop_at_13(trainer):
        if trainer.step == 13:
            trainer.interrupt()

    first, _ = train_run(corpus, tmp_path / "run", callback=stop_at_13, **settings)
    saved = checkpoint.load_state(tmp_path / "run")
    assert saved["schedule"] == {"scale": 0.5, "best": first.best_val_loss,
                                 "evals_since_best": 2, "decays_since_best": 1,
                                 "stopped": False}
    from conftest import quiet

    from charrnn.training import prepare
    resumed = prepare.resume(tmp_path / "run", reporter=quiet())
    assert resumed.elapsed == saved["elapsed"] > 0 and resumed.schedule == first.schedule
    after = resumed.run_loop()
    whole, uninterrupted = train_run(corpus, tmp_path / "whole", **settings)
    assert resumed.schedule == whole.schedule and whole.schedule.scale == 0.5 ** 4
    assert after.losses == uninterrupted.losses[13:]


def test_a_training_state_saved_on_a_gpu_resumes_on_a_cpu(write, tmp_path, monkeypatch):
    import torch.serialization as serialization

    corpus = write("hamlet.txt", TEXT)
    trainer, _ = train_run(corpus, tmp_path / "run", max_steps=4, eval_every=2)

    def on_the_gpu(storage):  # tag every tensor as torch does on a CUDA machine
        return "cuda:0"

    # what a GPU run writes: every storage tagged cuda:0, loadable only by mapping it
    monkeypatch.setattr(serialization, "_package_registry",
                        [(0, on_the_gpu, lambda obj, location: None),
                         *serialization._package_registry])
    trainer.save_latest()
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="CUDA"):  # the file really is a GPU file
        torch.load(tmp_path / "run" / checkpoint.LATEST, weights_only=True)
    resumed = invoke("train", "--resume", tmp_path / "run", "--max-steps", 6, "--device", "cpu")
    assert resumed.exit_code == 0, resumed.output
    assert checkpoint.load_state(tmp_path / "run")["step"] == 6


def test_a_second_ctrl_c_quits_at_once_without_saving(write, tmp_path, cache_dir):
    run = tmp_path / "run"
    # a model large enough that the save after the first Ctrl-C takes a while
    proc = start_training(write("hamlet.txt", TEXT), run, cache_dir, "--hidden-size", "768")
    wait_for(run / checkpoint.METRICS, proc, timeout=120)
    proc.send_signal(signal.SIGINT)
    said = []
    while not said or not said[-1].startswith("stopping:"):  # the first one was taken
        said.append(proc.stderr.readline())
        assert said[-1], "".join(said)
    proc.send_signal(signal.SIGINT)  # (two at once would arrive as one)
    _, rest = proc.communicate(timeout=60)
    stderr = "".join(said) + rest
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert "interrupted at step" not in stderr  # it quit before saying it saved
    checkpoint.load_state(run)  # and whatever it was writing, the checkpoint is whole
    assert not list(run.glob(".*.tmp"))  # a save cut short removed its temporary file


# ---------------------------------------------------------------------------------------------
# Hostile text


def sample_to_a_terminal(run, *flags) -> tuple[int, str]:
    """`charrnn sample` with a real terminal (a pty) as its stdout: (exit code, what the
    terminal got)."""
    import os
    import select
    import subprocess
    import sys

    master, slave = os.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "charrnn", "sample", str(run), "--prime",
                               "\x1b[31mred", "--length", "200", "--temp", "0.5", "--seed", "1",
                               *flags], stdout=slave, stderr=subprocess.PIPE, timeout=120)
        got = b""
        while select.select([master], [], [], 0.2)[0]:
            data = os.read(master, 65536)
            if not data:
                break
            got += data
    finally:
        os.close(master)
        os.close(slave)
    return done.returncode, got.decode("utf-8")


def test_sample_is_raw_to_a_file_safe_to_a_terminal_and_either_when_asked(write, tmp_path):
    """A stranger's model may write escape sequences (OSC 0 retitles the terminal, OSC 52
    writes its clipboard): to a terminal, sample shows them as symbols unless --raw is given;
    to a file or a pipe it writes the text exactly, unless --safe is given."""
    text = "\x1b[31mred\x1b[0m [bold]x[/] \u202eevil\n" * 200
    train_run(write("hostile.txt", text), tmp_path / "run", max_steps=150, lr=1e-2,
              batch_size=4, seq_len=32, model={"hidden_size": 64})
    raw = invoke("sample", tmp_path / "run", "--prime", "\x1b[31mred", "--length", 200,
                 "--temp", 0.5, "--seed", 1)
    drawn = raw.stdout[len("\x1b[31mred"):]  # the model's text, after the echoed prime
    assert raw.exit_code == 0 and "\x1b" in drawn  # raw: exactly what the model wrote
    safe = invoke("sample", tmp_path / "run", "--prime", "\x1b[31mred", "--length", 200,
                  "--temp", 0.5, "--seed", 1, "--safe")
    assert "\x1b" not in safe.stdout and "\u202e" not in safe.stdout
    assert "␛[31mred" in safe.stdout and "[bold]x[/]" in safe.stdout
    assert safe.stdout.count("\n") == raw.stdout.count("\n")  # newlines stay newlines
    code, seen = sample_to_a_terminal(tmp_path / "run")
    assert code == 0 and "␛[31mred" in seen and "\x1b" not in seen and "\u202e" not in seen
    code, seen = sample_to_a_terminal(tmp_path / "run", "--raw")
    assert code == 0 and "\x1b" in seen[len("\x1b[31mred"):]  # the model's own, raw
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
    # a lone surrogate cannot be UTF-8: it is written as its escape, the rest as it is
    assert sampled.stdout_bytes.decode("utf-8")  # valid UTF-8 throughout
    assert re.search(r"\\udc(e9|ff|fe)", sampled.stdout), sampled.stdout
    safe = invoke("sample", run, "--length", 300, "--seed", 0, "--temp", 1.5, "--safe")
    assert safe.exit_code == 0 and "\\udc" not in safe.stdout and "\ufffd" in safe.stdout


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
    assert sampled.exit_code == 0 and len(sampled.stdout) == 50  # the text, nothing added


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
