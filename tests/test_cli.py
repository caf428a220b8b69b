import json
import os
import subprocess
import sys

import pytest
from conftest import invoke

TEXT = "ROMEO: But soft, what light through yonder window breaks?\n" * 60



@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    corpus = folder / "romeo.txt"
    corpus.write_text(TEXT)
    result = invoke("train", corpus, "--out", folder / "run", "--max-steps", 30,
                    "--eval-every", 10, "--hidden-size", 32, "--layers", 1, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "best validation loss" in result.stderr
    assert f"charrnn sample {folder / 'run'}" in result.stderr
    assert result.stdout == ""  # stdout is kept for sampled text
    return folder / "run"


def test_every_evaluation_line_shows_the_training_speed(tmp_path):
    import re

    corpus = tmp_path / "romeo.txt"
    corpus.write_text(TEXT)
    result = invoke("train", corpus, "--out", tmp_path / "run", "--max-steps", 9,
                    "--eval-every", 3, "--hidden-size", 16, "--layers", 1)
    speeds = [int(m.replace(",", "")) for m in
              re.findall(r"val loss .* ([\d,]+) chars/s", result.stderr)]
    assert len(speeds) == 3 and all(speed > 0 for speed in speeds), result.stderr


def test_train_writes_a_run_and_sample_streams_text_to_stdout(run):
    assert (run / "model.safetensors").exists()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    result = invoke("sample", run, "--prime", "ROMEO:", "--length", 50, "--seed", 1)
    assert result.exit_code == 0
    # exactly the text: no newline is added where stdout is not a terminal
    assert result.stdout.startswith("ROMEO:") and len(result.stdout) == len("ROMEO:") + 50
    assert result.stderr == ""
    again = invoke("sample", run, "--prime", "ROMEO:", "--length", 50, "--seed", 1)
    assert again.stdout == result.stdout


def test_sample_options(run):
    greedy = invoke("sample", run, "--temp", 0, "--length", 40, "--seed", 1).stdout
    assert invoke("sample", run, "--argmax", "--length", 40, "--seed", 9).stdout == greedy
    two = invoke("sample", run, "--num-samples", 2, "--length", 20, "--seed", 1,
                 "--top-k", 5, "--top-p", 0.9).stdout
    one = invoke("sample", run, "--length", 20, "--seed", 1, "--top-k", 5, "--top-p", 0.9).stdout
    assert len(two) == 20 + 2 + 20 and two[:20] == one and two[20:22] == "\n\n"  # a blank line


def test_prime_file_and_unknown_characters(run, tmp_path):
    prime = tmp_path / "prime.txt"
    prime.write_text("But soft")
    assert invoke("sample", run, "--prime-file", prime, "--length", 5).stdout.startswith(
        "But soft")
    unknown = invoke("sample", run, "--prime", "ROMEO§", "--length", 5)
    assert unknown.exit_code == 1 and "'§'" in unknown.stderr
    dropped = invoke("sample", run, "--prime", "ROMEO§", "--drop-unknown", "--length", 5)
    assert dropped.exit_code == 0 and dropped.stdout.startswith("ROMEO")


def test_resume_continues_with_a_new_step_limit(run, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    result = invoke("train", "--resume", copy, "--max-steps", 40)
    assert result.exit_code == 0, result.output
    assert json.loads((copy / "config.json").read_text())["step"] in (30, 40)
    assert "at step 40" in result.stderr


def test_python_m_charrnn_and_help_explain_every_option():
    out = subprocess.run([sys.executable, "-m", "charrnn", "train", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for flag in ("--model", "--hidden-size", "--time", "--resume", "--init-from", "--seed"):
        assert flag in out
    out = subprocess.run([sys.executable, "-m", "charrnn", "sample", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for flag in ("--temperature", "--top-k", "--top-p", "--prime", "--length", "--argmax"):
        assert flag in out


def test_sampled_text_streams_before_the_sample_ends(run):
    """Through a pipe the text comes as it is drawn, a few characters at a time, not in
    blocks: the first read returns what was written by then, far less than the 8 KB a block
    buffer holds back (and the process is still drawing)."""
    import os

    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "sample", str(run), "--length",
                             "300000", "--seed", "1"], stdout=subprocess.PIPE, bufsize=0)
    try:
        first = os.read(proc.stdout.fileno(), 1 << 16)  # blocks until the first bytes come
        assert 0 < len(first) < 4096 and proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_several_temperatures_equal_the_separate_calls_each_headed(run):
    both = invoke("sample", run, "--temp", "0.5,1.2", "--seed", 3, "--length", 40)
    low = invoke("sample", run, "--temp", 0.5, "--seed", 3, "--length", 40)
    high = invoke("sample", run, "--temp", 1.2, "--seed", 3, "--length", 40)
    assert both.exit_code == 0 and both.stdout == low.stdout + "\n\n" + high.stdout
    assert both.stderr.splitlines() == ["--- temperature 0.5 ---", "--- temperature 1.2 ---"]


def test_stop_ends_a_sample_at_the_stop_text(run):
    full = invoke("sample", run, "--seed", 5, "--length", 300, "--temp", 1.0).stdout
    stop = next(ch for ch in full[5:] if ch.isalpha())  # a letter the sample does write
    cut = invoke("sample", run, "--seed", 5, "--length", 300, "--temp", 1.0, "--stop", stop)
    assert cut.stdout == full[: full.index(stop) + 1]  # ending at the stop, nothing after


def test_stop_at_a_blank_line_ends_at_the_first_one(tmp_path):
    """On a corpus of paragraphs, `--stop '\\n\\n'` prints one paragraph and its blank line."""
    corpus = tmp_path / "verse.txt"
    corpus.write_text("so it goes\nand on\n\n" * 300)
    result = invoke("train", corpus, "--out", tmp_path / "run", "--max-steps", 60,
                    "--hidden-size", 32, "--layers", 1, "--lr", "0.01", "--seed", 1)
    assert result.exit_code == 0, result.output
    full = invoke("sample", tmp_path / "run", "--length", 400, "--seed", 2, "--temp", 0.5).stdout
    assert "\n\n" in full  # the model does write blank lines
    cut = invoke("sample", tmp_path / "run", "--length", 400, "--seed", 2, "--temp", 0.5,
                 "--stop", r"\n\n")
    assert cut.exit_code == 0 and cut.stdout == full[: full.index("\n\n") + 2]


def test_novelty_says_the_longest_copied_stretch(run):
    result = invoke("sample", run, "--seed", 1, "--length", 200, "--novelty")
    assert result.exit_code == 0
    said = result.stderr.strip().splitlines()[-1]
    assert said.startswith("novelty: the longest stretch of the sample found verbatim in the "
                           "training text is ") and "romeo.txt" in said


def test_info_tells_an_interrupted_run_from_a_finished_one(tmp_path):
    from conftest import train_run

    corpus = tmp_path / "romeo.txt"
    corpus.write_text(TEXT)
    run = tmp_path / "run"

    def stop_at_7(trainer):
        if trainer.step == 7:
            trainer.interrupt()

    train_run(corpus, run, max_steps=20, eval_every=5, callback=stop_at_7)
    facts = json.loads(invoke("info", run, "--json").stdout)
    assert facts["progress"]["step"] == 7 and facts["progress"]["planned_steps"] == 20
    assert not facts["progress"]["finished"] and facts["model"]["hidden_size"] == 32
    said = invoke("info", run, "--color", "never").stdout
    assert "stopped early" in said and f"charrnn train --resume {run}" in said
    train_run(None, run, resume=True)
    facts = json.loads(invoke("info", run, "--json").stdout)
    assert facts["progress"]["finished"] and facts["progress"]["step"] == 20
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [c["step"] for c in facts["curves"]] == [5, 10, 15, 20] == [m["step"] for m in metrics]
    assert [c["val_loss"] for c in facts["curves"]] == [m["val_loss"] for m in metrics]
    said = invoke("info", run, "--color", "never").stdout
    assert "20 of 20 planned; finished" in said and "loss, nats per character" in said
    assert "\x1b" not in said  # --color never: a chart without colour codes


def test_every_setting_is_an_option_of_its_command():
    """The commands name the settings they take (charrnn/cli/*.py); none is left out."""
    import typer

    from charrnn.cli import app
    from charrnn.cli.base import option_settings
    from charrnn.config import InspectConfig, ModelConfig, SampleConfig, TrainConfig

    group = typer.main.get_command(app)
    for command, classes in (("train", (ModelConfig, TrainConfig)), ("sample", (SampleConfig,)),
                             ("inspect-cells", (InspectConfig,))):
        taken = {p.name for p in group.commands[command].params}
        missing = [f.name for cls in classes for f in option_settings(cls) if f.name not in taken]
        assert missing == [], f"{command} does not take {missing}"


def test_a_command_leaves_with_its_code_and_everything_it_wrote():
    """The command line leaves without Python's slow teardown of torch: what was still
    buffered on stdout and stderr is written first, and the code is sys.exit's."""
    code = ("import sys, torch; from charrnn.cli import leave; sys.stdout.write('text'); "
            "sys.stderr.write('said'); leave({!r})")
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    for given, rc, err in ((0, 0, "said"), (3, 3, "said"), (None, 0, "said"),
                           ("charrnn: error: why", 1, "saidcharrnn: error: why\n")):
        done = subprocess.run([sys.executable, "-c", code.format(given)], capture_output=True,
                              text=True, timeout=120, env=buffered)
        assert (done.returncode, done.stdout, done.stderr) == (rc, "text", err)
