"""Every accepted value does what its help says, and every refused one is one line: the edges
of each option and environment variable, run as a user runs them."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import four_step_run, invoke

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind\n" * 40


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    return four_step_run(tmp_path_factory.mktemp("values"), TEXT, "hamlet.txt")


def charrnn(*args, env=None, timeout=120, **kw):
    """The command line in a fresh process, with `env` added to the environment."""
    return subprocess.run([sys.executable, "-m", "charrnn", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, **kw)


def one_error_line(result) -> str:
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charrnn: error: "), result.stderr
    return lines[0]


def test_the_largest_seed_trains_and_samples(write, tmp_path):
    corpus = write("hamlet.txt", TEXT)
    result = invoke("train", corpus, "--out", tmp_path / "run", "--max-steps", "4",
                    "--eval-every", "2", "--hidden-size", "16", "--seed", str(2**64 - 1))
    assert result.exit_code == 0, result.output
    result = invoke("sample", tmp_path / "run", "--seed", str(2**64 - 1), "--length", "20")
    assert result.exit_code == 0 and len(result.stdout) >= 20


@pytest.mark.parametrize("encoding", ["rot13", "base64", "hex", "zlib"])
def test_an_encoding_that_is_not_a_text_encoding_is_one_line(write, encoding):
    corpus = write("hamlet.txt", TEXT)
    result = invoke("train", corpus, "--encoding", encoding, catch_exceptions=True)
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stderr.strip() == (f"charrnn: error: --encoding {encoding} is not a text "
                                     "encoding; give one like utf-8, latin-1 or cp1252")


@pytest.mark.parametrize("device", ["cuda:abc", "cuda:", "cuda:-1"])
def test_a_malformed_device_is_one_line(write, device):
    result = invoke("train", write("hamlet.txt", TEXT), "--device", device)
    assert result.exit_code == 1
    assert result.stderr.startswith("charrnn: error: --device must be")


@pytest.mark.slow
def test_a_folder_holding_a_file_whose_name_is_not_utf8(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "main.py").write_text("print('hello')\n" * 200)
    name = os.fsencode(src) + b"/caf\xe9.py"  # latin-1, not UTF-8
    with open(name, "wb") as f:
        f.write(b"x = 1\n" * 200)
    result = charrnn("train", src, "--out", tmp_path / "run", "--max-steps", "2",
                     "--hidden-size", "16", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    import json
    built = Path(json.loads((tmp_path / "run" / "config.json").read_text())["corpus"]["path"])
    assert "# caf\\udce9.py\n" in built.read_text(encoding="utf-8")  # its name, as escapes


@pytest.mark.slow
def test_an_ascii_terminal_gets_text_it_can_show(small_run):
    env = {"PYTHONIOENCODING": "ascii"}
    info = charrnn("info", small_run, env=env)
    assert info.returncode == 0 and "Traceback" not in info.stderr
    result = charrnn("sample", small_run, "--prime", "To be", "--length", "50", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("To be")


@pytest.mark.slow
def test_help_and_version_to_a_full_device_are_one_line():
    if not Path("/dev/full").exists():
        pytest.skip("this system has no /dev/full")
    for args in (["--help"], ["--version"], ["train", "--help"]):
        with open("/dev/full", "w") as full:
            result = subprocess.run([sys.executable, "-m", "charrnn", *args], stdout=full,
                                    stderr=subprocess.PIPE, text=True, timeout=60)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
        assert result.stderr.strip().startswith("charrnn: error:"), result.stderr


@pytest.mark.parametrize("env, said", [
    ({"WORLD_SIZE": "abc", "RANK": "0"}, "WORLD_SIZE='abc' must be a whole number"),
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 is set but RANK is not"),
    ({"WORLD_SIZE": "2", "RANK": "x"}, "RANK='x' must be a whole number"),
])
@pytest.mark.slow
def test_a_broken_torchrun_environment_is_one_line(small_run, tmp_path, env, said):
    corpus = tmp_path / "hamlet.txt"
    corpus.write_text(TEXT)
    line = one_error_line(charrnn("train", corpus, "--out", tmp_path / "r", "--max-steps", "2",
                                  env=env))
    assert said in line, line


def test_features_counts_and_layers_out_of_range_are_one_line(small_run):
    for args, said in ((["--features", "-3"], "--features must be a whole number from 1 to"),
                       (["--features", "0"], "--features must be a whole number from 1 to"),
                       (["--layer", "0"], "--layer 0 does not exist"),
                       (["--layer", "9"], "--layer 9 does not exist")):
        result = invoke("features", small_run, *args, "--steps", "1")
        assert result.exit_code == 1 and said in result.stderr, (args, result.stderr)


def test_an_empty_ablation_is_one_line(small_run):
    result = invoke("inspect-cells", small_run, "--ablate", "")
    assert result.exit_code == 1
    assert "--ablate names no cells" in result.stderr


@pytest.mark.slow
def test_a_cache_folder_written_with_a_tilde_is_the_home_folder(small_run, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    corpus = tmp_path / "hamlet.txt"
    corpus.write_text(TEXT)
    result = charrnn("train", corpus, "--out", tmp_path / "r", "--max-steps", "2",
                     "--hidden-size", "16", cwd=tmp_path,
                     env={"HOME": str(home), "CHARRNN_CACHE_DIR": "~/c"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert (home / "c").is_dir() and not (tmp_path / "~").exists()


def test_a_temperature_too_small_to_divide_by_is_greedy(small_run):
    greedy = invoke("sample", small_run, "--temp", "0", "--length", "40", "--seed", "1")
    tiny = invoke("sample", small_run, "--temp", "1e-320", "--length", "40", "--seed", "1")
    assert tiny.exit_code == 0 and "Warning" not in tiny.stderr and tiny.stderr == ""
    assert tiny.stdout == greedy.stdout


def test_the_dropout_line_counts_the_batch_the_small_corpus_allows(write, tmp_path):
    # 2,000 characters cannot hold 32 streams of 64: the batch shrinks, and the passes over
    # the corpus (which set the dropout) are those of the batch that trains
    corpus = write("short.txt", TEXT[:2000])
    result = invoke("train", corpus, "--out", tmp_path / "run", "--max-steps", "40",
                    "--eval-every", "40")
    assert result.exit_code == 0, result.output
    import json

    from charrnn.engine.streams import fit_batch
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    batch, seq, _ = fit_batch(1800, 32, 64)  # what the 1,800 training characters hold
    assert batch < 32
    reason = config["choice"]["reason"]
    assert f"a budget of {40 * batch * seq:,} characters" in reason, reason
    assert "passes over the corpus" in reason, reason  # (the small text: it would pass often)
    said = int(reason.split(" passes over the corpus")[0].split()[-1])
    assert said == round(40 * batch * seq / 1800), reason


def test_suggested_commands_are_quoted_for_the_shell(write, tmp_path):
    corpus = write("hamlet.txt", TEXT)
    out = tmp_path / "my run; rm -rf ~"
    result = invoke("train", corpus, "--out", out, "--max-steps", "2", "--hidden-size", "16")
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stderr.splitlines() if "sample from it with:" in x)
    suggested = line.split("sample from it with:", 1)[1].strip()
    assert shlex.split(suggested) == ["charrnn", "sample", str(out)]


def test_resume_from_another_folder_finds_the_corpus_it_recorded(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "hamlet.txt").write_text(TEXT)
    monkeypatch.chdir(work)
    result = invoke("train", "hamlet.txt", "--out", "run", "--max-steps", "2",
                    "--hidden-size", "16")
    assert result.exit_code == 0, result.output
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "hamlet.txt").write_text("another text with the same name\n" * 50)
    monkeypatch.chdir(elsewhere)
    result = invoke("train", "--resume", work / "run", "--max-steps", "4")
    assert result.exit_code == 0, result.stderr
