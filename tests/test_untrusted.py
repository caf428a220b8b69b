"""Checkpoints from strangers: loading never runs code, and any damage is a clear error."""

import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import edit_config, four_step_run, invoke
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charrnn import checkpoint
from charrnn.errors import CharrnnError

TEXT = "All the world's a stage, and all the men and women merely players.\n" * 40


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    return four_step_run(tmp_path_factory.mktemp("good"), TEXT, "asyoulikeit.txt", layers=2)


@pytest.fixture
def run_copy(good_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(good_run, copy)
    return copy


class Exploit:
    """Unpickling this would create a marker file: the proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def exploits(marker) -> dict[str, bytes]:
    raw = pickle.dumps({"format_version": 1, "x": Exploit(str(marker))})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:  # torch.save's zip layout, with the exploit inside
        z.writestr("archive/data.pkl", raw)
        z.writestr("archive/version", "3\n")
        z.writestr("archive/byteorder", "little")
    return {"plain pickle": raw, "torch zip": buffer.getvalue()}


COMMANDS = [["sample", "{run}", "--length", "5"],
            ["inspect-cells", "{run}", "--prime", "All the", "--length", "20"],
            ["train", "--resume", "{run}", "--max-steps", "8"]]


@pytest.mark.parametrize("target", [checkpoint.CONFIG, checkpoint.WEIGHTS, checkpoint.LATEST,
                                    checkpoint.METRICS])
@pytest.mark.parametrize("kind", ["plain pickle", "torch zip"])
def test_a_planted_pickle_never_runs_in_any_file_of_a_run(run_copy, tmp_path, target, kind):
    marker = tmp_path / "pwned"
    needs = {checkpoint.CONFIG: COMMANDS, checkpoint.WEIGHTS: COMMANDS[:2],
             checkpoint.LATEST: COMMANDS[2:], checkpoint.METRICS: []}[target]
    for command in COMMANDS:
        (run_copy / target).write_bytes(exploits(marker)[kind])  # planted afresh each time
        args = [str(run_copy) if a == "{run}" else a for a in command]
        result = invoke(*args, catch_exceptions=True)
        assert not marker.exists(), f"{command} ran code from {target}"
        if command in needs:  # a command that reads the planted file refuses it, clearly
            assert result.exit_code == 1, (command, result.output)
            lines = result.stderr.strip().splitlines()
            assert lines[-1].startswith("charrnn: error: ") and "Traceback" not in result.output
        else:
            assert result.exit_code == 0, (command, result.output)


def test_the_planted_payload_does_run_when_unpickled_unsafely(tmp_path):
    # the positive control: without it, the test above would pass with a harmless payload
    for n, (kind, payload) in enumerate(exploits(tmp_path / "pwned").items()):
        marker = tmp_path / "pwned"
        marker.unlink(missing_ok=True)
        if kind == "plain pickle":
            pickle.loads(payload)
        else:
            path = tmp_path / f"unsafe{n}.pt"
            path.write_bytes(payload)
            torch.load(path, weights_only=False)
        assert marker.exists(), kind


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(format_version=99), "format version 99"),
    (lambda c: c["model"].update(hidden_size=17), "does not match the model"),
    (lambda c: c["model"].update(layers=3), "does not match the model"),
    (lambda c: c.update(vocab=c["vocab"][:-1]), "inconsistent"),
    (lambda c: c.update(vocab=c["vocab"][::-1]), "invalid"),
    (lambda c: c["model"].update(model="lstm2"), "unknown --model"),
    (lambda c: c["model"].update(hidden_size=10**12), "hidden-size must be"),
    (lambda c: c.pop("model"), '"model" is missing'),
])
def test_damaged_configs_are_clear_errors(run_copy, change, message):
    edit_config(run_copy, change)
    with pytest.raises(CharrnnError, match=message):
        checkpoint.load(run_copy)


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "header"])
def test_damaged_weights_are_clear_errors(run_copy, damage):
    path = run_copy / checkpoint.WEIGHTS
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[20] ^= 0xFF
    elif damage == "empty":
        data = bytearray()
    else:  # a header that claims a huge length
        data[:8] = struct.pack("<Q", 2**60)
    path.write_bytes(bytes(data))
    with pytest.raises(CharrnnError, match="corrupted"):
        checkpoint.load(run_copy)


def test_nan_weights_are_refused(run_copy):
    from safetensors.torch import load_file, save_file
    weights = load_file(run_copy / checkpoint.WEIGHTS)
    weights["head.bias"][0] = float("nan")
    save_file(weights, run_copy / checkpoint.WEIGHTS)
    with pytest.raises(CharrnnError, match="NaN"):
        checkpoint.load(run_copy)


def test_a_damaged_training_state_cannot_be_resumed(run_copy):
    path = run_copy / checkpoint.LATEST
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CharrnnError, match="cannot be resumed"):
        checkpoint.load_state(run_copy)
    torch.save({"format_version": 1, "model": {"embed.weight": torch.zeros(2, 2)}}, path)
    result = invoke("train", "--resume", str(run_copy), catch_exceptions=True)
    assert result.exit_code == 1 and "charrnn: error:" in result.stderr


def test_a_strangers_config_pointing_at_a_private_file_never_reads_it(run_copy, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("All the world's secrets: the men and women merely players.\n" * 3)
    edit_config(run_copy, lambda c: c["corpus"].update(path=str(secret)))
    page = tmp_path / "page.html"
    result = invoke("inspect-cells", str(run_copy), "--html", str(page), catch_exceptions=True)
    assert result.exit_code == 1
    assert result.stderr.startswith("charrnn: error: the file at the run's corpus path")
    assert "secrets" not in result.output and not page.exists()
    # nor with the digest taken away
    edit_config(run_copy, lambda c: c["corpus"].pop("digest"))
    result = invoke("inspect-cells", str(run_copy), catch_exceptions=True)
    assert result.exit_code == 1 and "secrets" not in result.output


def test_paths_from_a_strangers_config_reach_the_terminal_escaped(run_copy):
    hostile = "/nowhere/\x1b]0;owned\x07\x1b[31mred\u202e.txt"
    edit_config(run_copy, lambda c: c["corpus"].update(path=hostile, source=hostile))
    for command in (["inspect-cells", str(run_copy)], ["train", "--resume", str(run_copy)]):
        result = invoke(*command, catch_exceptions=True)
        assert result.exit_code == 1
        assert "\x1b" not in result.output and "\x07" not in result.output
        assert "\u202e" not in result.output and "\\u001b]0;owned" in result.stderr


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_resume_checks_a_huge_config_against_the_weights_before_allocating(run_copy):
    # 2 x 8000 LSTM: a billion parameters, 4 GB, if it were built before the check
    edit_config(run_copy, lambda c: c["model"].update(hidden_size=8000))
    # the peak from /proc (VmHWM starts afresh at exec; ru_maxrss would inherit pytest's)
    code = ("import re, sys\nfrom charrnn.training import prepare\n"
            "try:\n    prepare.resume(sys.argv[1])\nexcept Exception as e:\n    print(e)\n"
            "print(re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read())[1])")
    out = subprocess.run([sys.executable, "-c", code, str(run_copy)], capture_output=True,
                         text=True, timeout=120).stdout.splitlines()
    assert "cannot be resumed" in out[0] or "does not match" in out[0], out
    assert int(out[1]) < 1_000_000, f"peak {int(out[1]) // 1024} MB"  # kilobytes


def test_a_training_state_with_unknown_keys_or_too_many_bytes_is_refused(run_copy):
    path = run_copy / checkpoint.LATEST
    state = checkpoint.load_state(run_copy)
    torch.save({**state, "payload": torch.zeros(4)}, path)
    with pytest.raises(CharrnnError, match="holds keys a charrnn training state never has"):
        checkpoint.load_state(run_copy)
    torch.save({**state, "since_eval": torch.zeros(3_000_000, dtype=torch.float64)}, path)
    result = invoke("train", "--resume", str(run_copy), catch_exceptions=True)
    assert result.exit_code == 1 and "more than a training state of the model" in result.stderr


@pytest.mark.slow
def test_a_training_state_that_inflates_is_refused_before_it_is_read(run_copy):
    # a megabyte of file that would inflate to a gigabyte: deflated zip entries, which torch
    # reads but never writes
    path = run_copy / checkpoint.LATEST
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", pickle.dumps({"format_version": 1}))
        with z.open("archive/data/0", "w") as f:
            block = bytes(1 << 20)
            for _ in range(1024):
                f.write(block)
    assert path.stat().st_size < 2 << 20
    result = invoke("train", "--resume", str(run_copy), catch_exceptions=True)
    assert result.exit_code == 1 and "holds compressed entries" in result.stderr


# ---------------------------------------------------------------------------------------------
# Property-based: whatever the bytes, the loader answers with its own error or a model


def load_answers(run) -> None:
    try:
        checkpoint.load(run)
    except CharrnnError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20)
fuzz = settings(max_examples=60, deadline=2000, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@fuzz
@given(field=st.sampled_from(["model", "vocab", "format_version", "train", "corpus",
                              "model.hidden_size", "model.layers", "model.model",
                              "model.dropout", "model.vocab_size", "model.embedding_size"]),
       value=json_values)
def test_random_config_values_never_crash_the_loader(run_copy, field, value):
    def change(config):
        if "." in field:
            outer, inner = field.split(".")
            config[outer][inner] = value
        else:
            config[field] = value
    original = (run_copy / checkpoint.CONFIG).read_bytes()
    edit_config(run_copy, change)
    load_answers(run_copy)
    (run_copy / checkpoint.CONFIG).write_bytes(original)


@fuzz
@given(data=st.data())
def test_mutated_files_never_crash_the_loader(run_copy, data):
    name = data.draw(st.sampled_from([checkpoint.CONFIG, checkpoint.WEIGHTS]))
    path = run_copy / name
    original = path.read_bytes()
    mutated = bytearray(original)
    # the safetensors header (and all of a config) is near the start: mutate there most
    for _ in range(data.draw(st.integers(1, 8))):
        where = data.draw(st.integers(0, min(len(mutated) - 1, 600)))
        action = data.draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        if action == "set":
            mutated[where] = data.draw(st.integers(0, 255))
        elif action == "insert":
            mutated[where:where] = data.draw(st.binary(min_size=1, max_size=16))
        elif action == "delete":
            del mutated[where: where + data.draw(st.integers(1, 16))]
        else:
            del mutated[where:]
        if not mutated:
            break
    path.write_bytes(bytes(mutated))
    load_answers(run_copy)
    path.write_bytes(original)


# ---------------------------------------------------------------------------------------------
# A damaged run, file by file: every damage is one line naming the file (or, for a cache of
# charrnn's own, a rebuilt cache), never a hang, a traceback, or a read or write outside the run


DEEP = "[" * 200_000 + "]" * 200_000


def damage(path: Path, kind: str, outside: Path) -> None:
    """Replace `path` by a damaged version of itself; `outside` is a file beyond the run."""
    original = path.read_bytes() if path.is_file() else b"{}"
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    if kind == "link":  # to a good copy outside the run: charrnn must not read or write it
        outside.write_bytes(original)
        path.symlink_to(outside)
    elif kind == "dangling link":
        path.symlink_to(outside.with_name("nowhere"))
    elif kind == "fifo":
        import os
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "huge":
        with open(path, "wb") as f:
            f.truncate(100 << 30)  # 100 GB, sparse
    elif kind == "deep":
        path.write_text(DEEP + "\n")
    elif kind == "nan":
        text = original.decode("utf-8", "replace")
        path.write_text(text.replace('"val_loss": ', '"val_loss": NaN, "x": ')
                        .replace('"best_val_loss": ', '"best_val_loss": NaN, "y": '))
    elif kind == "types":
        lines = []
        for line in original.decode("utf-8", "replace").splitlines() or ["{}"]:
            try:
                record = json.loads(line)
            except ValueError:
                record = json.loads(original)  # (a file of one JSON object over many lines)
                lines = [record]
                break
            lines.append(record)
        for record in lines:
            for key in ("step", "val_loss", "epoch"):
                if key in record:
                    record[key] = "lots"
            if "corpus" in record:
                record["corpus"]["characters"] = "lots"
                record["plan"] = {"seconds": "soon", "steps": -3}
        path.write_text("\n".join(json.dumps(r) for r in lines) + "\n")


RUN_DAMAGE = [  # (file, damage, commands that read it)
    *[(checkpoint.CONFIG, kind, ["sample", "info", "resume", "inspect", "eval"])
      for kind in ("link", "dangling link", "fifo", "folder", "huge", "deep")],
    (checkpoint.CONFIG, "nan", ["sample", "info", "resume"]),
    (checkpoint.CONFIG, "types", ["info", "resume"]),
    *[(checkpoint.WEIGHTS, kind, ["sample", "inspect", "eval"])
      for kind in ("link", "dangling link", "fifo", "folder", "huge")],
    *[(checkpoint.LATEST, kind, ["resume"])
      for kind in ("link", "dangling link", "fifo", "folder", "huge")],
    *[(checkpoint.METRICS, kind, ["resume", "info"])
      for kind in ("link", "dangling link", "fifo", "folder", "huge", "deep", "nan", "types")],
    *[(checkpoint.SAMPLES, kind, ["resume"])
      for kind in ("link", "dangling link", "fifo", "folder", "huge")],
]

COMMAND_LINES = {
    "sample": ["sample", "{run}", "--length", "5"],
    "info": ["info", "{run}"],
    "resume": ["train", "--resume", "{run}", "--max-steps", "6"],
    "inspect": ["inspect-cells", "{run}", "--prime", "All the", "--length", "20"],
    "eval": ["eval", "{run}"],
}


def start_fresh(args) -> subprocess.Popen:
    """The command line in a fresh process, started (several run side by side)."""
    return subprocess.Popen([sys.executable, "-m", "charrnn", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish_fresh(proc: subprocess.Popen, args, timeout=90) -> subprocess.CompletedProcess:
    """Its result: a hang fails the test (the timeout) instead of stopping it."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def run_in_process(args):
    """The command line in this process (quicker), as a CompletedProcess."""
    result = invoke(*args, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback
        stderr = "Traceback\n" + "".join(traceback.format_exception(result.exception))
    else:
        stderr = result.stderr
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, stderr)


@pytest.mark.parametrize("name, kind, commands", RUN_DAMAGE,
                         ids=[f"{n} {k}" for n, k, _ in RUN_DAMAGE])
@pytest.mark.slow
def test_a_damaged_run_file_is_one_line_naming_it(good_run, tmp_path, name, kind, commands):
    prepared = {}
    for command in commands:
        run = tmp_path / f"run-{command}"
        shutil.copytree(good_run, run)
        outside = tmp_path / f"outside-{command}"
        damage(run / name, kind, outside)
        before = outside.read_bytes() if outside.exists() else None
        args = [str(run) if a == "{run}" else a for a in COMMAND_LINES[command]]
        prepared[command] = (outside, before, args)
    # a FIFO in fresh processes, all at once, whose hang the timeout ends; the rest here
    started = {c: start_fresh(args) for c, (_, _, args) in prepared.items()} \
        if kind == "fifo" else {}
    for command, (outside, before, args) in prepared.items():
        result = (finish_fresh(started[command], args) if kind == "fifo"
                  else run_in_process(args))
        said = result.stderr.strip().splitlines()
        assert "Traceback" not in result.stderr, (command, result.stderr[-3000:])
        after = outside.read_bytes() if outside.exists() else None
        assert after == before, f"{command} wrote through the link to {outside}"
        assert not outside.with_name("nowhere").exists(), f"{command} made the link's target"
        if result.returncode == 0 and (command == "info" or (name == checkpoint.METRICS and
                                                            kind in ("deep", "nan", "types"))):
            # info shows what it can, and says what it cannot read; a resumed run leaves
            # damaged lines of its log out, and says so
            assert name in result.stdout + result.stderr, (command, result.stdout)
            continue
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert len(said) >= 1 and said[-1].startswith("charrnn: error: "), said
        assert name in said[-1], (command, said[-1])


# ---------------------------------------------------------------------------------------------
# A stranger's run given to --plan-from is checked as --resume checks it: typed, bounded, and
# nothing read or fetched that the user did not name

PLAN = {"seconds": 6, "steps": 40, "eval_every": 20, "eval_chars": 512, "chars_per_sec": 5000.0,
        "eval_chars_per_sec": 20000.0, "setup_seconds": 0.0, "replans": []}

STRANGE = {
    "a plan that is text": (lambda c: c.update(plan="fast"), "plan is not a JSON object"),
    "a plan that is a list": (lambda c: c.update(plan=[1, 2]), "plan is not a JSON object"),
    "a choice that is text": (lambda c: c.update(choice="x"), "choice is not a JSON object"),
    "a choice that is a list": (lambda c: c.update(choice=[1]), "choice is not a JSON object"),
    "threads negative": (lambda c: c["train"].update(threads=-1), "--threads must be"),
    "threads as text": (lambda c: c["train"].update(threads="2"), "--threads must be"),
    "threads a float": (lambda c: c["train"].update(threads=2.5), "--threads must be"),
    "threads 2000": (lambda c: c["train"].update(threads=2000), "--threads must be"),
    "a float seed": (lambda c: c["train"].update(seed=1.5), "--seed must be"),
    "amp as text": (lambda c: c["train"].update(amp="yes"), "--amp must be"),
    "a speed past any machine": (
        lambda c: c.update(plan={**PLAN, "chars_per_sec": 1e308}), "a speed of"),
    "10**12 steps for 6 s": (
        lambda c: c.update(plan={**PLAN, "steps": 10**12}), "would take"),
}


@pytest.mark.parametrize("how, strange", [
    (how, strange) for how in ("--plan-from", "--resume") for strange in STRANGE
    # (a resumed run keeps its clock: a plan too long for its budget stops at the budget)
    if (how, strange) != ("--resume", "10**12 steps for 6 s")])
def test_a_strangers_config_is_one_line_for_plan_from_as_for_resume(run_copy, tmp_path, how,
                                                                    strange):
    change, message = STRANGE[strange]
    edit_config(run_copy, change)
    args = (["train", "--plan-from", run_copy, "--out", tmp_path / "again"] if how == "--plan-from"
            else ["train", "--resume", run_copy, "--max-steps", "8"])
    result = invoke(*args, catch_exceptions=True)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charrnn: error: ") and message in lines[0], \
        result.output
    assert not (tmp_path / "again").exists()


def test_plan_from_never_reads_a_folder_or_fetches_a_corpus_its_config_names(
        run_copy, tmp_path, monkeypatch):
    import urllib.request

    folder = tmp_path / "private"
    folder.mkdir()
    (folder / "notes.txt").write_text("All the world's secrets.\n" * 50)
    fetched = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: fetched.append(a))
    for source in (str(folder), "tinyshakespeare"):
        edit_config(run_copy, lambda c, s=source: c["corpus"].update(path=s, source=s))
        for args in (["train", "--plan-from", run_copy, "--out", tmp_path / "again"],
                     ["train", "--resume", run_copy, "--max-steps", "8"]):
            result = invoke(*args, catch_exceptions=True)
            assert result.exit_code == 1, result.output
            assert "give it yourself" in result.stderr and source in result.stderr
    assert not fetched
    assert not any("secrets" in p.read_text(errors="replace")
                   for p in Path(os.environ["CHARRNN_CACHE_DIR"]).rglob("*") if p.is_file())


def test_a_huge_file_a_strangers_config_names_is_refused_by_its_size_before_it_is_read(
        run_copy, tmp_path, monkeypatch):
    """A file of 200 GB where the run recorded a text of a few thousand characters: refused
    by every command that looks for the run's text, before a byte of it is read."""
    from charrnn.data import corpus

    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as f:
        f.truncate(200 * 10**9)  # (sparse: no disk spent)
    edit_config(run_copy, lambda c: c["corpus"].update(path=str(huge), source=str(huge)))
    read = []
    monkeypatch.setattr(corpus, "file_digest", lambda path: read.append(path) or "x")
    for args in (["eval", run_copy], ["inspect-cells", run_copy],
                 ["train", "--resume", run_copy, "--max-steps", "8"],
                 ["train", "--plan-from", run_copy, "--out", tmp_path / "again"]):
        result = invoke(*args, catch_exceptions=True)
        assert result.exit_code == 1 and "charrnn: error: " in result.stderr, (args, result.output)
    assert not read


def test_speeds_at_the_edges_of_a_float_are_left_out_with_one_line(run_copy, tmp_path,
                                                                   monkeypatch):
    """A planted calibration entry of 1e308 or a denormal, a resumed run's recorded speed of
    1e308, and `info` on metrics that hold 1e308: no OverflowError anywhere."""
    from charrnn.budget import calibrate

    calibrate._cache_path().parent.mkdir(parents=True, exist_ok=True)
    calibrate._cache_path().write_text(json.dumps({"format": calibrate.CACHE_FORMAT, "speeds": {
        "planted": [{"train": 1e308, "eval": 5e-324}],
        "good": [{"train": 1000.0, "eval": 2000.0}]}}))
    said = []
    assert list(calibrate._read_cache(said.append)) == ["good"]
    assert len(said) == 1 and "left out 1 damaged entry of the calibration cache" in said[0]

    edit_config(run_copy, lambda c: c.update(speed={"train": 1e308, "eval": 1e308}))
    result = invoke("train", "--resume", run_copy, "--max-steps", "6", catch_exceptions=True)
    assert result.exit_code == 0, result.output
    metrics = run_copy / checkpoint.METRICS
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    for line in lines:
        line.update(chars_per_sec=1e308, elapsed=1e308, train_loss=1e308)
    metrics.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = invoke("info", run_copy, catch_exceptions=True)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
