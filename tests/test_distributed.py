"""Training under torchrun: two CPU processes (gloo) on 127.0.0.1, launched by torchrun's own
launcher, against one process training the same global batch of streams."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import invoke
from safetensors.torch import load_file

import charrnn
from charrnn import checkpoint
from charrnn.engine.distributed import World
from charrnn.engine.streams import Streams
from charrnn.errors import CharrnnError

pytestmark = [pytest.mark.skipif(not torch.distributed.is_available()
                                 or not torch.distributed.is_gloo_available(),
                                 reason="this torch has no gloo backend"),
              pytest.mark.slow]  # two processes, each a torchrun job

TEXT = ("To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to "
        "suffer\nThe slings and arrows of outrageous fortune,\n") * 120
# a tiny model with no dropout (its masks come from each rank's own generator)
MODEL = ["--layers", "1", "--hidden-size", "32", "--embedding-size", "16", "--dropout", "0",
         "--seq-len", "16", "--lr", "0.01", "--seed", "3", "--sample-every", "0",
         "--warmup-steps", "0", "--device", "cpu"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(cwd: Path, *args, nproc: int = 2, wait: bool = True, timeout: str = "60",
             nodes: tuple[int, int, int] | None = None, env: dict | None = None):
    """`torchrun --nproc-per-node N -m charrnn train ARGS` as a user runs it (in its own process
    group, as in a terminal); the finished process, or the running one with wait=False. With
    `nodes` (node rank, of how many, port), one machine's launcher of a job on several."""
    where = (["--master-addr", "127.0.0.1", "--master-port", str(free_port())] if nodes is None
             else ["--nnodes", str(nodes[1]), "--node-rank", str(nodes[0]), "--master-addr",
                   "127.0.0.1", "--master-port", str(nodes[2])])
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               *where, "-m", "charrnn", "train", *[str(a) for a in args]]
    env = {**(env or os.environ), "CHARRNN_DIST_TIMEOUT": timeout, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    if wait:
        proc.output = proc.communicate(timeout=300)[0]
    return proc


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / checkpoint.METRICS).read_text().splitlines()]


def wait_for_lines(path: Path, lines: int, proc, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() or len(path.read_text().splitlines()) < lines:
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, f"{path} never had {lines} lines"
        time.sleep(0.01)


def ranks(launcher: subprocess.Popen) -> dict[int, int]:
    """{rank: pid} of the processes a torchrun launcher started."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == launcher.pid:
                env = dict(item.split("=", 1) for item in
                           (proc / "environ").read_bytes().decode().split("\0") if "=" in item)
                found[int(env["RANK"])] = int(proc.name)
        except (OSError, ValueError, KeyError, IndexError):
            pass
    return found


def test_a_batch_divided_among_ranks_is_the_batch_of_one_process():
    ids = np.arange(1001, dtype=np.uint16)
    whole = Streams(ids, 8, 10)
    parts = [Streams(ids, 8, 10, World(rank=r, size=4).share(8)) for r in range(4)]
    for i in (0, 5, whole.windows - 1):
        x, y = whole.tensors(i, torch.device("cpu"))
        assert torch.equal(torch.cat([p.tensors(i, torch.device("cpu"))[0] for p in parts]), x)
        assert torch.equal(torch.cat([p.tensors(i, torch.device("cpu"))[1] for p in parts]), y)
    kept = [p.to(torch.device("cpu"), keep=True) for p in parts]  # the path a GPU takes
    assert torch.equal(torch.cat([p.tensors(3, torch.device("cpu"))[0] for p in kept]),
                       whole.tensors(3, torch.device("cpu"))[0])
    assert {p.windows for p in parts} == {whole.windows}
    with pytest.raises(CharrnnError, match="multiple of 3"):
        World(rank=0, size=3).share(8)
    assert [World(rank=r, size=3).share(8, equal=False) for r in range(3)] == \
        [(0, 2), (2, 5), (5, 8)]  # validation sums, so its shares may differ


def test_two_ranks_train_exactly_as_one_process_and_only_rank_0_writes(write, tmp_path):
    corpus = write("hamlet.txt", TEXT)
    steps = ["--batch-size", "8", "--max-steps", "30", "--eval-every", "5", *MODEL]
    one = invoke("train", corpus, "--out", tmp_path / "one", *steps)
    assert one.exit_code == 0, one.output
    work = tmp_path / "work"  # the job's working folder: nothing may appear in it but the run
    work.mkdir()
    two = torchrun(work, corpus, "--out", work / "two", *steps)
    assert two.returncode == 0, two.output

    a, b = metrics(tmp_path / "one"), metrics(work / "two")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [5, 10, 15, 20, 25, 30]
    for x, y in zip(a, b):
        assert x["train_loss"] == pytest.approx(y["train_loss"], abs=1e-5)
        assert x["val_loss"] == pytest.approx(y["val_loss"], abs=1e-5)
    wa, wb = load_file(tmp_path / "one" / "model.safetensors"), load_file(
        work / "two" / "model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-4) for k in wa)

    # the same run directory: the same files, the same config
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == \
        sorted(p.name for p in (work / "two").iterdir())
    assert [p.name for p in work.iterdir()] == ["two"]
    ca, cb = (json.loads((run / "config.json").read_text()) for run in
              (tmp_path / "one", work / "two"))
    assert ca.pop("best_val_loss") == pytest.approx(cb.pop("best_val_loss"), abs=1e-5)
    assert ca.pop("speed")["train"] > 0 and cb.pop("speed")["train"] > 0  # (the clock's)
    assert ca == cb
    # one voice: rank 0's lines once each, nothing from rank 1
    lines = two.output.splitlines()
    assert sum(line.startswith("training 1x32 lstm") for line in lines) == 1
    assert "with 2 processes (gloo) on cpu; batch 8 x 16" in two.output
    assert sum(line.startswith("step 30 ") for line in lines) == 1
    assert "rank 1" not in two.output and "Traceback" not in two.output

    # a state from two ranks loads everywhere: sample, inspect-cells, a one-process resume
    assert invoke("sample", work / "two", "--length", "40").exit_code == 0
    inspected = invoke("inspect-cells", work / "two", "--length", "200", "--color", "never")
    assert inspected.exit_code == 0, inspected.output
    info = invoke("info", work / "two", "--color", "never")
    assert "processes    2 (torchrun)" in info.output, info.output
    state = checkpoint.load_state(work / "two")
    assert state["world_size"] == 2 and [h.shape[1] for h in state["hidden"]] == [8, 8]
    three = torchrun(work, "--resume", work / "two", "--max-steps", "35", nproc=3)
    assert three.returncode != 0
    assert (f"{work / 'two'} trains a batch of 8 streams, which 3 processes cannot share "
            "equally; resume it with a number of processes that divides 8") in three.output
    resumed = invoke("train", "--resume", work / "two", "--max-steps", "35")
    assert resumed.exit_code == 0, resumed.output
    assert "trained by 2 processes and goes on with 1" in resumed.output
    assert metrics(work / "two")[-1]["step"] == 35


def test_ctrl_c_saves_once_and_a_distributed_resume_continues_exactly(write, tmp_path):
    corpus = write("hamlet.txt", TEXT)
    steps = ["--batch-size", "16", "--max-steps", "400", "--eval-every", "20", *MODEL,
             "--hidden-size", "96"]
    whole = torchrun(tmp_path, corpus, "--out", tmp_path / "whole", *steps)
    assert whole.returncode == 0, whole.output

    job = torchrun(tmp_path, corpus, "--out", tmp_path / "cut", *steps, wait=False)
    wait_for_lines(tmp_path / "cut" / checkpoint.METRICS, 1, job)
    os.killpg(job.pid, signal.SIGINT)  # Ctrl-C in the terminal: the launcher and both ranks
    output = job.communicate(timeout=120)[0]
    said = [line for line in output.splitlines() if line.startswith("interrupted at step")]
    assert len(said) == 1, output  # rank 0 saved once, for both
    step = int(said[0].split()[3].rstrip(":"))
    assert 20 <= step < 400 and checkpoint.load_state(tmp_path / "cut")["step"] == step

    rest = torchrun(tmp_path, "--resume", tmp_path / "cut")
    assert rest.returncode == 0, rest.output
    assert "goes on with" not in rest.output  # the same world size: no warning
    def figures(run):  # all but the clock's
        return [{k: v for k, v in r.items() if k not in ("elapsed", "chars_per_sec")}
                for r in metrics(tmp_path / run)]
    assert figures("cut") == figures("whole")
    wa, wb = (load_file(tmp_path / run / "model.safetensors") for run in ("whole", "cut"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # bit for bit


@pytest.mark.parametrize("dies, lives", [(1, 0), (0, 1)])  # (0: the one that writes)
def test_a_rank_that_dies_ends_the_other_with_one_line_and_the_run_resumes(write, tmp_path,
                                                                           dies, lives):
    corpus = write("hamlet.txt", TEXT)
    run = tmp_path / "run"
    job = torchrun(tmp_path, corpus, "--out", run, "--batch-size", "8", "--max-steps", "100000",
                   "--eval-every", "20", *MODEL, wait=False, timeout="20")
    wait_for_lines(run / checkpoint.METRICS, 2, job)
    os.kill(ranks(job)[dies], signal.SIGKILL)
    started = time.monotonic()
    output = job.communicate(timeout=120)[0]
    assert job.returncode != 0
    assert time.monotonic() - started < 20 + 30  # the timeout, and torchrun's grace period
    said = [line for line in output.splitlines()
            if line.startswith(f"charrnn (rank {lives}): error")]
    assert len(said) == 1, output
    assert "lost contact with the other processes" in said[0]
    assert f"--resume {run}" in said[0]

    step = checkpoint.load_state(run)["step"]  # the last checkpoint is whole...
    resumed = torchrun(tmp_path, "--resume", run, "--max-steps", str(step + 10))
    assert resumed.returncode == 0, resumed.output  # ...and the run goes on
    assert checkpoint.load_state(run)["step"] == step + 10


def test_a_batch_the_ranks_cannot_share_is_refused_and_the_default_is_shared(write, tmp_path):
    corpus = write("hamlet.txt", TEXT)
    job = torchrun(tmp_path, corpus, "--out", tmp_path / "run", "--batch-size", "7",
                   "--max-steps", "5", *MODEL)
    assert job.returncode != 0
    assert "a batch of 7 streams cannot be divided equally among 2 processes; give a " \
           "--batch-size that is a multiple of 2" in job.output
    assert str(Path(charrnn.__file__).parent) not in job.output  # no traceback of ours
    assert not (tmp_path / "run").exists()

    # the default batch (32 streams) is rounded up to one they can share
    job = torchrun(tmp_path, corpus, "--out", tmp_path / "run", "--max-steps", "3", *MODEL,
                   nproc=3)
    assert job.returncode == 0, job.output
    assert "with 3 processes (gloo) on cpu; batch 33 x 16" in job.output


def test_two_machines_need_the_run_folder_only_where_rank_0_runs(write, tmp_path):
    """Two launchers, as on two machines: the second one's folder never holds the run, and it
    resumes from what rank 0 reads and sends."""
    corpus = write("hamlet.txt", TEXT)
    first, second = tmp_path / "machine0", tmp_path / "machine1"
    first.mkdir(), second.mkdir()

    def job(*args):
        port = free_port()
        launchers = [torchrun(folder, *args, nproc=1, wait=False, nodes=(rank, 2, port))
                     for rank, folder in ((0, first), (1, second))]
        outputs = [p.communicate(timeout=300)[0] for p in launchers]
        assert [p.returncode for p in launchers] == [0, 0], outputs
        return outputs

    job(corpus, "--out", "run", "--batch-size", "8", "--max-steps", "20", "--eval-every", "10",
        *MODEL)
    job("--resume", "run", "--max-steps", "30")
    assert [r["step"] for r in metrics(first / "run")] == [10, 20, 30]
    assert list(second.iterdir()) == []


@pytest.mark.parametrize("env, args, said", [
    ({"CHARRNN_DIST_TIMEOUT": "soon"}, [],
     "CHARRNN_DIST_TIMEOUT='soon' must be a number of seconds above 0"),
    ({}, ["--device", "mps"], "--device mps does not go with torchrun: each process takes the "
                              "GPU its LOCAL_RANK names (--device cuda or auto), or the CPU"),
    ({}, ["--device", "cuda:1"], "--device cuda:1 does not go with torchrun"),
])
def test_torchrun_mistakes_are_one_line_before_joining(write, tmp_path, env, args, said):
    corpus = write("hamlet.txt", TEXT)
    job = subprocess.run([sys.executable, "-m", "charrnn", "train", str(corpus), "--out",
                          str(tmp_path / "run"), *args], capture_output=True, text=True,
                         env={**os.environ, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0",
                              **env}, timeout=120)
    assert job.returncode == 1
    assert job.stderr.startswith("charrnn (rank 0): error: " + said), job.stderr
    assert len(job.stderr.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_divergence_one_rank_sees_stops_every_rank_with_the_same_error(write, tmp_path):
    """Only rank 1 sees the loss explode (a sitecustomize makes its check fail from its fifth
    look on); rank 0, which never sees it, stops at the same step with the same error, sent to
    it with the step's agreement: not a lost peer's line, not a hang. The last checkpoint stays
    whole."""
    corpus = write("hamlet.txt", TEXT)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('RANK') == '1':\n"
        "    from charrnn.training import stopping\n"
        "    looks = [0]\n"
        "    def sane(loss, vocab_size, real=stopping.sane):\n"
        "        looks[0] += 1\n"
        "        return looks[0] < 5 and real(loss, vocab_size)\n"
        "    stopping.sane = sane\n")
    path = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH")) if p)
    job = torchrun(tmp_path, corpus, "--out", tmp_path / "run", "--batch-size", "8",
                   "--max-steps", "100000", "--eval-every", "100000", *MODEL,
                   env={**os.environ, "PYTHONPATH": path})
    assert job.returncode != 0
    said = {line[len("charrnn (rank "):][0]: line for line in job.output.splitlines()
            if line.startswith("charrnn (rank")}
    assert "0" in said, job.output  # (rank 1's line may not come: torchrun stops it)
    assert all("error: training diverged at step" in line and "--lr" in line
               for line in said.values()), job.output
    steps = {line.split("at step ")[1].split()[0] for line in said.values()}
    assert len(steps) == 1  # the same step on every rank
    state = checkpoint.load_state(tmp_path / "run")  # the state saved at the start, whole
    assert state["step"] == 0 and all(torch.isfinite(t).all() for t in state["model"].values())


def test_a_hung_rank_is_given_up_after_the_timeout_in_one_line(write, tmp_path):
    """A rank that stops answering (SIGSTOP: alive, holding its connections) is given up by the
    other once CHARRNN_DIST_TIMEOUT has passed, in one line that says how to resume."""
    corpus = write("hamlet.txt", TEXT)
    run = tmp_path / "run"
    job = torchrun(tmp_path, corpus, "--out", run, "--batch-size", "8", "--max-steps", "100000",
                   "--eval-every", "20", *MODEL, wait=False, timeout="6")
    wait_for_lines(run / checkpoint.METRICS, 2, job)
    hung = ranks(job)[1]
    os.kill(hung, signal.SIGSTOP)
    started = time.monotonic()
    try:
        lines = []
        while not any(line.startswith("charrnn (rank 0): error") for line in lines):
            line = job.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        waited = time.monotonic() - started
    finally:
        os.kill(hung, signal.SIGKILL)
        job.communicate(timeout=120)
    said = next(line for line in lines if line.startswith("charrnn (rank 0): error"))
    assert "lost contact with the other processes" in said and f"--resume {run}" in said
    assert 5 < waited < 6 + 20, waited  # the timeout, not before, and not forever
    assert checkpoint.load_state(run)["step"] >= 20  # the last checkpoint, whole


def test_a_time_budget_under_torchrun_is_planned_from_the_jobs_own_speed(write, tmp_path):
    """The steps of a --time job follow the job's speed, timed on every rank with the gradients
    exchanged, not N times one process's, and the same on every rank (each rank planning from
    its own clock once made them stop at different steps and wait on each other for ever): the
    job is planned again from its own speed, as rank 0 measures it, and ends at its planned
    end, inside its budget."""
    corpus = write("hamlet.txt", TEXT)
    job = torchrun(tmp_path, corpus, "--out", tmp_path / "run", "--time", "8s", *MODEL,
                   "--batch-size", "8", "--seq-len", "16", "--patience", "0")
    assert job.returncode == 0, job.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    plan, speed = config["plan"], config["speed"]
    assert plan["seconds"] == 8 and speed is not None and plan["replans"], job.output
    last = plan["replans"][-1]  # planned again from the job's own recent speed
    assert 0.5 * speed["train"] <= last["chars_per_sec"] <= 2 * speed["train"], (last, speed)
    said = next(line for line in job.output.splitlines() if line.startswith("stopped at step"))
    assert "the planned end of the time budget" in said, job.output
    took = said.split(" after ")[1].split(" of a ")[0]
    assert took in ("0:07", "0:08"), said  # between 0.9 and 1.05 of the budget
