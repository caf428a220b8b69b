"""What the operating system can do to a command: a full disk, a read-only folder, a closed or
full stdout, a pipe closed early, Ctrl-C at start-up. Each is one clear line (or, for a pipe
closed early, a quiet success), and what was saved survives.

The file-system cases run in a private mount namespace (`unshare`), with a small tmpfs, so they
hit the real errors; where the machine does not allow that, they are skipped.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import four_step_run

pytestmark = pytest.mark.slow  # end to end: processes, signals, real clocks

TEXT = "Friends, Romans, countrymen, lend me your ears;\nI come to bury Caesar.\n" * 60
PYTHON = sys.executable


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return four_step_run(tmp_path_factory.mktemp("os"), TEXT, "caesar.txt")


def charrnn(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "charrnn", *map(str, args)], capture_output=True,
                          text=True, timeout=120, **kwargs)


def shell(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHON": PYTHON})


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charrnn: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


# ---------------------------------------------------------------------------------------------
# stdout


def test_a_pipe_closed_early_is_a_quiet_success(run):
    result = shell(f'set -o pipefail; "$PYTHON" -m charrnn sample {run} --length 100000000 '
                   "| head -c 100 > /dev/null")
    assert result.returncode == 0 and result.stderr == ""


def test_a_full_stdout_is_one_line(run):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    result = shell(f'"$PYTHON" -m charrnn sample {run} --length 100000 > /dev/full')
    assert result.returncode == 1
    assert "cannot write to stdout: no space left on device" in one_line(result.stderr)


@pytest.mark.parametrize("command", ["sample {run} --length 10",
                                     "inspect-cells {run} --prime Friends --length 20"])
def test_a_closed_stdout_is_one_line(run, command):
    result = shell(f'"$PYTHON" -m charrnn {command.format(run=run)} >&-')
    assert result.returncode == 1
    assert "stdout is closed" in one_line(result.stderr)


# ---------------------------------------------------------------------------------------------
# file systems


def namespace_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=64k tmpfs /tmp"], capture_output=True)
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(not namespace_works(),
                                  reason="this machine allows no private mount namespace")


def in_namespace(mount_options: str, script: str, folder: Path) -> subprocess.CompletedProcess:
    """Run `script` with a fresh tmpfs (with `mount_options`) mounted at `folder`."""
    folder.mkdir(exist_ok=True)
    file = folder.parent / f"{folder.name}.sh"
    file.write_text(f"mount -t tmpfs -o {mount_options} tmpfs {folder} || exit 99\n{script}\n")
    return shell(f"unshare --user --map-root-user --mount bash {file}")


@needs_mounts
def test_a_read_only_folder_for_the_run_is_one_line(tmp_path):
    corpus = tmp_path / "caesar.txt"
    corpus.write_text(TEXT)
    result = in_namespace("ro,size=1m", f'"$PYTHON" -m charrnn train {corpus} --out '
                          f"{tmp_path}/ro/run --max-steps 2 --hidden-size 16", tmp_path / "ro")
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert f"{tmp_path}/ro/run" in line and "read-only file system" in line


@needs_mounts
def test_a_full_disk_keeps_the_last_good_checkpoint(tmp_path):
    corpus = tmp_path / "caesar.txt"
    corpus.write_text(TEXT)
    disk = tmp_path / "disk"
    # 1 MB: the first checkpoint (about 0.5 MB) fits; the second cannot sit beside it while it
    # is written
    script = (f'"$PYTHON" -m charrnn train {corpus} --out {disk}/run --max-steps 40 '
              f"--eval-every 5 --hidden-size 64 --layers 1 --device cpu; echo rc=$?; "
              f'"$PYTHON" -c "from charrnn import checkpoint; '
              f"print('step', checkpoint.load_state('{disk}/run')['step'])\"; "
              f"ls -a {disk}/run")
    result = in_namespace("size=1m", script, disk)
    assert "rc=1" in result.stdout, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("charrnn: error")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"no space left on the device holding {disk}/run/" in errors[0]
    assert "the last good checkpoint" in errors[0] and "is kept" in errors[0]
    assert "step 0" in result.stdout or "step 5" in result.stdout  # it loads
    assert ".tmp" not in result.stdout  # the cut-short write was removed


# ---------------------------------------------------------------------------------------------
# signals at start-up


def test_ctrl_c_during_start_up_exits_130_and_leaves_nothing(tmp_path, cache_dir):
    corpus = tmp_path / "caesar.txt"
    corpus.write_text(TEXT * 50)
    proc = subprocess.Popen([PYTHON, "-m", "charrnn", "train", str(corpus), "--out",
                             str(tmp_path / "run"), "--time", "10m"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "CHARRNN_CACHE_DIR": str(cache_dir)})
    first = proc.stderr.readline()  # it has started choosing the model (timing sizes)
    assert first, "no output"
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 130, first + rest
    assert "Traceback" not in first + rest
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# Memory, and the names in a line


def test_a_permission_error_names_the_users_file_not_charrnns_temporary_one(tmp_path,
                                                                            monkeypatch):
    from charrnn import fileio
    from charrnn.errors import describe_os_error

    def refused(prefix, suffix, dir):
        raise PermissionError(13, "Permission denied", os.path.join(dir, f"{prefix}4a2b{suffix}"))

    monkeypatch.setattr(fileio.tempfile, "mkstemp", refused)
    target = tmp_path / "features-l1-h.safetensors"
    with pytest.raises(OSError) as raised:
        fileio.atomic_write_bytes(target, b"x")
    assert raised.value.filename == str(target)
    line = describe_os_error(raised.value)
    assert str(target) in line and ".tmp" not in line and "4a2b" not in line


def test_a_model_too_large_to_train_in_memory_is_one_line_and_keeps_the_run(tmp_path,
                                                                          monkeypatch):
    """The allocator's failure at the first step (a 1x8192 model on a small machine) is one
    line with the model's size and what to do; the run's folder, as it was, is kept."""
    from conftest import invoke

    from charrnn.engine.step import StepRunner

    def step(self, *a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not "
                           "enough memory: you tried to allocate 1073741824 bytes.")

    corpus = tmp_path / "caesar.txt"
    corpus.write_text(TEXT)
    monkeypatch.setattr(StepRunner, "step", step)
    result = invoke("train", corpus, "--out", tmp_path / "run", "--max-steps", "3",
                    "--hidden-size", "64", "--layers", "1", catch_exceptions=True)
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = result.stderr.strip().splitlines()[-1]  # (after the start's lines)
    assert line.startswith("charrnn: error: ") and "a 1x64 lstm" in line, line
    assert "does not fit in the memory of" in line
    assert "--hidden-size" in line and "--batch-size" in line
