"""The thread policy and the governor that follows the machine's load (charrnn/threads.py)."""

import os
import subprocess
import sys
import time

import pytest
from conftest import invoke

from charrnn import threads
from charrnn.errors import CharrnnError
from charrnn.threads import Governor, Threads, policy

# ---------------------------------------------------------------------------------------------
# The policy: a pure function of the machine and of what the user set


def test_an_idle_machine_gets_a_thread_per_core_that_follows_the_load():
    t = policy(cores=8)
    assert (t.count, t.most, t.adapt) == (8, 8, True)


def test_busy_cores_are_left_to_the_work_that_keeps_them_busy():
    assert policy(cores=2, busy=1.0).count == 1
    assert policy(cores=8, busy=2.6).count == 5
    assert policy(cores=2, busy=5.0).count == 1  # never none
    t = policy(cores=2, busy=1.0)
    assert t.most == 2 and t.adapt and "1 busy" in t.reason


def test_the_cpu_affinity_and_the_cgroup_quota_bound_the_threads():
    assert policy(cores=16, affinity=4).most == 4
    assert policy(cores=16, quota=2.5).most == 3
    assert policy(cores=16, affinity=8, quota=1.0).most == 1


def test_what_the_user_set_is_kept_and_not_changed_by_the_load():
    for t in (policy(cores=8, busy=7, asked=3), policy(cores=8, omp_env="3"),
              policy(cores=8, torch_set=3)):
        assert (t.count, t.most, t.adapt) == (3, 3, False)
    # --threads wins over OMP_NUM_THREADS, which wins over torch.set_num_threads
    assert policy(cores=8, asked=2, omp_env="5", torch_set=6).count == 2
    assert policy(cores=8, omp_env="5", torch_set=6).count == 5


def test_a_torchrun_process_gets_one_thread():
    t = policy(cores=8, launched=True)
    assert (t.count, t.adapt) == (1, False)


def test_openmps_list_of_nested_counts_is_read_as_its_first(monkeypatch):
    """OMP_NUM_THREADS=4,2 is valid OpenMP (4 threads, then 2 in a nested region): torch's pool
    takes the first, and so does charrnn; a list that is not numbers is one line."""
    assert policy(cores=8, omp_env="4,2").count == 4
    assert policy(cores=8, omp_env="3").count == 3
    for bad in ("4,x", ",2", "four"):
        with pytest.raises(CharrnnError, match="OMP_NUM_THREADS must be a whole number"):
            policy(cores=8, omp_env=bad)
    import torch

    monkeypatch.delenv(threads.ENV)
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")
    try:
        assert threads.configure() == Threads(4, 4, False, "OMP_NUM_THREADS")
    finally:
        torch.set_num_threads(1)


def test_a_resumed_run_starts_on_the_threads_it_saved_with():
    assert policy(cores=8, busy=6, prefer=8).count == 8
    assert policy(cores=4, prefer=8).count == 4  # but never more than the machine allows


@pytest.mark.parametrize("text, value", [("4", 4), (" 4 ", 4), ("auto", None), ("", None),
                                         (None, None), (4, 4)])
def test_threads_values_parse(text, value):
    assert threads.parse(text) == value


@pytest.mark.parametrize("text", ["0", "-1", "two", "1.5", "100000", "1_0", "\u0663", "+4",
                                  2.5, True])
def test_a_bad_threads_value_is_one_clear_line(text):
    """ASCII digits only: Python's int() also reads 1_0 and an Arabic-Indic three, which no
    shell or OpenMP setting means."""
    with pytest.raises(CharrnnError, match="--threads must be a whole number"):
        threads.parse(text)


def test_the_environment_variable_sets_the_threads(monkeypatch):
    import torch

    monkeypatch.setenv(threads.ENV, "1")
    assert threads.configure() == Threads(1, 1, False, "as given")
    assert torch.get_num_threads() == 1
    monkeypatch.setenv(threads.ENV, "lots")
    with pytest.raises(CharrnnError, match="CHARRNN_THREADS must be"):
        threads.configure()


def test_auto_reads_this_machine(monkeypatch):
    monkeypatch.delenv(threads.ENV)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    t = threads.decide()
    assert 1 <= t.count <= t.most


def test_a_bad_threads_option_is_refused_in_one_line(tmp_path):
    result = invoke("sample", tmp_path, "--threads", "0")
    assert result.exit_code != 0
    assert "--threads must be a whole number" in result.stderr


# ---------------------------------------------------------------------------------------------
# The governor, on a faked clock, CPU clock and load


class Machine:
    """A machine of `cores` cores on which the governor's process trains: each unit of work
    takes `cost(threads)` seconds, and gets `share(threads)` of the CPU time it asks for."""

    def __init__(self, cost, share, others=None):
        self.cost, self.share, self.others = cost, share, others or (lambda: None)
        self.t = self.cpu = 0.0
        self.threads = 2
        self.spent = {1: 0.0, 2: 0.0}  # seconds of work at each thread count

    def run(self, governor: Governor, seconds: float) -> None:
        end = self.t + seconds
        while self.t < end:
            dt = self.cost(self.threads)
            self.t += dt
            self.spent[self.threads] += dt
            self.cpu += dt * self.threads * self.share(self.threads)
            governor.tick(1)

    def governor(self, t: Threads) -> Governor:
        machine = self

        class Load:
            def others(self):
                return machine.others()

        def use(n):
            machine.threads = n
        self.threads = t.count
        return Governor(t, clock=lambda: self.t, cpu_clock=lambda: self.cpu, apply=use,
                        load=Load())


QUIET = dict(cost=lambda n: {2: 0.010, 1: 0.016}[n], share=lambda n: 1.0)
# beside other work: two threads stall each other's barriers, one runs at its pace
BUSY = dict(cost=lambda n: {2: 0.400, 1: 0.020}[n], share=lambda n: {2: 0.5, 1: 1.0}[n])


def test_on_an_idle_machine_the_governor_never_moves():
    m = Machine(**QUIET)
    g = m.governor(Threads(2, 2, True, ""))
    m.run(g, 600)
    assert g.moves == [] and m.threads == 2


def test_beside_other_work_it_drops_to_fewer_threads_within_a_second_or_two():
    m = Machine(**BUSY)
    g = m.governor(Threads(2, 2, True, ""))
    m.run(g, 3)
    assert m.threads == 1 and g.moves[0][1] == 1 and g.moves[0][0] < 2.5


def test_tries_of_more_threads_back_off_while_the_other_work_stays():
    m = Machine(**BUSY)
    g = m.governor(Threads(1, 2, True, ""))
    m.run(g, 600)
    assert m.threads == 1 and g.moves == []
    # it tried now and then, each try given up after one unit of work: under 2% of the time
    assert g.wait["up"] == threads.MAX_WAIT_S
    assert 0 < m.spent[2] < 0.02 * 600


def test_when_the_other_work_ends_it_takes_the_cores_back():
    phase = {"busy": True}
    cost = lambda n: BUSY["cost"](n) if phase["busy"] else QUIET["cost"](n)  # noqa: E731
    share = lambda n: BUSY["share"](n) if phase["busy"] else 1.0  # noqa: E731
    m = Machine(cost, share, others=lambda: 1.0 if phase["busy"] else 0.0)
    g = m.governor(Threads(2, 2, True, ""))
    m.run(g, 60)
    assert m.threads == 1
    phase["busy"] = False
    m.run(g, 3)  # the freed core is seen at once, without waiting for the next try
    assert m.threads == 2 and g.moves[-1][1] == 2


def test_fixed_threads_are_never_changed():
    m = Machine(**BUSY)
    g = m.governor(Threads(2, 2, False, "as given"))
    m.run(g, 60)
    assert m.threads == 2 and g.moves == []


def test_the_rungs_halve_down_to_one():
    assert Governor(Threads(8, 8, True, ""), load=None).rungs == [8, 4, 2, 1]
    assert Governor(Threads(6, 6, True, ""), load=None).rungs == [6, 3, 1]


# ---------------------------------------------------------------------------------------------
# End to end: a real training run, a real neighbour


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_a_training_run_gives_a_core_to_a_neighbour_that_takes_one(tmp_path, monkeypatch):
    """With the threads left to charrnn (no --threads, no CHARRNN_THREADS), a run on a quiet
    machine starts on every core; when another program takes one, the loop's governor moves to
    fewer threads while it trains, and the run goes on to its end."""
    from conftest import train_run

    monkeypatch.delenv(threads.ENV)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    corpus = tmp_path / "c.txt"
    corpus.write_text("All the world's a stage, and all the men and women merely players.\n"
                      * 2000)
    cores = len(os.sched_getaffinity(0))
    seen = {"neighbour": None, "at": None, "start": None}

    def step(t):
        if t.step == 1:
            seen["start"] = t.governor.threads
        if t.step == 30:  # a neighbour takes a core, as a user's other program would
            seen["neighbour"] = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            seen["at"] = time.monotonic()
        if seen["at"] is not None and (t.governor.threads < cores or
                                       time.monotonic() - seen["at"] > 30):
            t.interrupt()

    try:
        trainer, outcome = train_run(corpus, tmp_path / "run", max_steps=10**6, batch_size=32,
                                     seq_len=64, callback=step,
                                     model={"hidden_size": 128, "layers": 2, "dropout": 0.0})
    finally:
        if seen["neighbour"] is not None:
            seen["neighbour"].kill()
            seen["neighbour"].wait()
    assert seen["start"] == cores  # a quiet machine: every core
    assert trainer.governor.threads < cores, trainer.governor.moves  # gave one to the neighbour
    assert outcome.stopped_by == "interrupted"
