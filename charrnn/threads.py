"""How many CPU threads charrnn's work runs on, and how that follows the machine's load.

torch's default, one OpenMP thread per core that spins at every barrier, is the fastest on an
idle machine and collapses beside anything else: a thread that loses its core holds up every
parallel region of every step, and a small model then trains tens of times slower than on one
thread (the benchmark's `contention` section measures it). So:

- `policy`, a pure function, decides the threads a command starts with and whether they may
  follow the load. What the user set is kept as it is: --threads or CHARRNN_THREADS,
  OMP_NUM_THREADS (torchrun sets it to 1 for each of its processes), and torch.set_num_threads
  called before charrnn in the Python API. Otherwise: the cores this process may use (its CPU
  affinity and cgroup quota), less those busy with other work as the command starts.
- `Governor` follows the load while a loop runs. When a window of work got less CPU time than
  its threads ask (process CPU time against wall time), it tries the next smaller count for a
  window and keeps it if it is faster; now and then it tries the next larger one. On an idle
  machine it never moves, so a run there keeps one thread count from start to end.
"""

from __future__ import annotations

import math
import os
import random
import re
import time
from dataclasses import dataclass

from charrnn.errors import CharrnnError

ENV = "CHARRNN_THREADS"
HELP = ("CPU threads: a number, or auto (the cores this process may use, less those busy, "
        "following the load as it runs).")
MAX_THREADS = 1024
BUSY_SAMPLE_S = 0.1  # how long the load is watched as a command starts

# the governor
WINDOW_S = 0.5  # a window of work, at least this long (and at least MIN_STEPS units of work)
MIN_STEPS = 2
SHARE_MIN = 0.8  # a window whose threads got less CPU time than this share of their wall time
GAIN = 1.05  # a count is taken only if it is this much faster than the one it would replace
GIVE_UP = 2.0  # a try ends at once when its work took this many times as long as before
RETRY_S = 10.0  # a count is tried again this long after a change...
BACKOFF = 3.0  # ...and after each try that failed, this many times longer,
MAX_WAIT_S = 300.0  # up to this; each wait drawn up to a third shorter, so that two
# charrnn processes side by side do not try more threads at the same moment


@dataclass(frozen=True)
class Threads:
    """The threads a command starts with, and what the governor may do with them."""

    count: int  # threads to start with
    most: int  # the most the governor may use
    adapt: bool  # whether the governor may change them
    reason: str  # why, in words: "--threads", "OMP_NUM_THREADS", "2 cores, 1 busy"...


def parse(text: str | int | None, what: str = "--threads") -> int | None:
    """'4' -> 4; 'auto', '' or None -> None (chosen); anything else is a mistake (so are
    Python's other spellings of a number, 1_0 or a digit of another script: the shell's
    OMP_NUM_THREADS and every other program read ASCII digits)."""
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "auto")):
        return None
    if isinstance(text, str) and re.fullmatch(r"\s*[0-9]{1,5}\s*", text, flags=re.ASCII):
        n = int(text)
    elif isinstance(text, int) and not isinstance(text, bool):
        n = text
    else:
        n = 0
    if not 1 <= n <= MAX_THREADS:
        raise CharrnnError(f"{what} must be a whole number from 1 to {MAX_THREADS} or auto, "
                           f"not {text!r}")
    return n


def parse_omp(text: str) -> int:
    """OMP_NUM_THREADS: a count, or OpenMP's list of counts for nested levels ('4,2'), whose
    first is the one torch's pool uses."""
    counts = [parse(part, "OMP_NUM_THREADS") if part.strip() else parse(text, "OMP_NUM_THREADS")
              for part in text.split(",")]
    return counts[0]


def policy(*, cores: int, affinity: int | None = None, quota: float | None = None,
           busy: float = 0.0, asked: int | None = None, omp_env: str | None = None,
           torch_set: int | None = None, launched: bool = False,
           prefer: int | None = None) -> Threads:
    """The start: `cores` the machine has, `affinity` the CPUs this process may run on, `quota`
    its cgroup's CPU limit in cores, `busy` the cores other work keeps busy now; `asked` the
    --threads or CHARRNN_THREADS given, `omp_env` OMP_NUM_THREADS, `torch_set` a count set with
    torch.set_num_threads, `launched` whether torchrun started this process; `prefer` the
    count to start with when the choice is charrnn's (a resumed run's, to go on exactly)."""
    if asked is not None:
        return Threads(asked, asked, False, "as given")
    if omp_env:
        n = parse_omp(omp_env) or 1
        return Threads(n, n, False, "OMP_NUM_THREADS")
    if launched:  # torchrun's processes share the machine: one thread each, as torchrun says
        return Threads(1, 1, False, "one per torchrun process")
    if torch_set is not None:
        return Threads(torch_set, torch_set, False, "torch.set_num_threads")
    most = max(1, min(cores, affinity or cores, math.ceil(quota) if quota else cores))
    count = max(1, min(most, prefer or round(most - busy)))
    said = f"{most} core{'s' if most != 1 else ''}"
    if count < most:
        said += f", {most - count} busy"
    return Threads(count, most, True, said)


# ---------------------------------------------------------------------------------------------
# What this machine and process have


def _affinity() -> set[int] | None:
    try:
        return os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return None


def _quota() -> float | None:
    """The cgroup (v2) CPU limit of this process, in cores; None when there is none."""
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as f:
            limit, period = f.read().split()[:2]
        return None if limit == "max" else int(limit) / int(period)
    except (OSError, ValueError):
        return None


def _cpu_times(cpus: set[int] | None) -> tuple[float, float] | None:
    """(busy, all) jiffies of the CPUs in `cpus` (all of them when None), from /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            lines = [line.split() for line in f if line.startswith("cpu")]
    except OSError:
        return None
    busy = total = 0.0
    for fields in lines:
        name = fields[0]
        if name == "cpu" or (cpus is not None and int(name[3:]) not in cpus):
            continue
        values = [float(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
        total += sum(values)
        busy += sum(values) - values[3] - values[4]
    return busy, total


class Load:
    """How many of this process's CPUs other processes kept busy since the last look."""

    def __init__(self, cpus: set[int] | None = None):
        self.cpus = cpus
        self.n = len(cpus) if cpus else (os.cpu_count() or 1)
        self.last, self.own = _cpu_times(cpus), time.process_time()

    def others(self) -> float | None:
        """Cores' worth of other work since the last call (None where the system does not
        say)."""
        now, own = _cpu_times(self.cpus), time.process_time()
        before, before_own = self.last, self.own
        self.last, self.own = now, own
        if now is None or before is None or now[1] <= before[1]:
            return None
        seconds = (now[1] - before[1]) / self.n / os.sysconf("SC_CLK_TCK")
        busy = (now[0] - before[0]) / (now[1] - before[1]) * self.n
        return max(0.0, busy - (own - before_own) / max(seconds, 1e-9))


def busy_cores(cpus: set[int] | None, seconds: float = BUSY_SAMPLE_S) -> float:
    """How many of `cpus` other processes keep busy, watched for `seconds` (0 where the
    operating system does not say)."""
    load = Load(cpus)
    time.sleep(seconds)
    return load.others() or 0.0


_torch_start: int | None = None  # torch's thread count when charrnn first looked
_ours: int | None = None  # the count charrnn set last


def _launched() -> bool:
    """Whether a launcher (torchrun) started this process as one of several."""
    size = os.environ.get("WORLD_SIZE", "1").strip()
    return size.isdigit() and int(size) > 1


def decide(asked: int | None = None, prefer: int | None = None) -> Threads:
    """The policy, from this machine's facts and what the user set."""
    import torch

    global _torch_start
    current = torch.get_num_threads()
    if _torch_start is None:
        _torch_start = current  # torch's own default: a thread per physical core
    asked = asked if asked is not None else parse(os.environ.get(ENV), ENV)
    torch_set = current if current not in (_torch_start, _ours) else None
    omp, launched = os.environ.get("OMP_NUM_THREADS"), _launched()
    cpus = _affinity()
    watch = asked is None and not omp and not launched and torch_set is None and not prefer
    return policy(cores=_torch_start, affinity=len(cpus) if cpus else None, quota=_quota(),
                  busy=busy_cores(cpus) if watch else 0.0, asked=asked, omp_env=omp,
                  torch_set=torch_set, launched=launched, prefer=prefer)


_blas = None  # threadpoolctl's controller of numpy's BLAS, made on first use


def use(n: int) -> None:
    """Run torch's and numpy's BLAS work on n threads from now on."""
    import torch

    global _ours, _blas
    torch.set_num_threads(n)
    _ours = n
    try:
        if _blas is None:
            from threadpoolctl import ThreadpoolController

            _blas = ThreadpoolController()
        _blas.limit(limits=n, user_api="blas")
    except Exception:  # noqa: BLE001 - numpy's BLAS keeping its own threads costs speed only
        pass


def configure(asked: int | None = None, prefer: int | None = None) -> Threads:
    """Decide the threads of a command and start with them."""
    threads = decide(asked, prefer)
    use(threads.count)
    return threads


# ---------------------------------------------------------------------------------------------
# Following the load


class Governor:
    """Changes the thread count while a loop runs, when the machine's load says so. The loop
    calls `tick(units)` after each unit of work (a training step, a sampled character) and
    `restart()` after anything else it did (an evaluation), so that only its work is timed."""

    def __init__(self, threads: Threads, clock=time.perf_counter, cpu_clock=time.process_time,
                 apply=use, load: Load | None = None):
        self.adapt = threads.adapt and threads.most > 1
        self.rungs = [threads.most]  # the counts it moves between, largest first
        while self.rungs[-1] > 1:
            self.rungs.append(self.rungs[-1] // 2)
        self.at = min(range(len(self.rungs)), key=lambda i: abs(self.rungs[i] - threads.count))
        self.clock, self.cpu_clock, self.apply = clock, cpu_clock, apply
        self.load = load if load is not None else (Load(_affinity()) if self.adapt else None)
        self.load_at_failure: float | None = None  # other work when more threads last lost
        self.jitter = random.Random()  # its own: training's random numbers are not touched
        self.probe: int | None = None  # the rung being tried, if any
        self.base_rate = 0.0  # units per second of the last window on the current rung
        now = self.clock()
        self.wait = {"up": RETRY_S, "down": RETRY_S}  # between tries each way
        self.next = {"up": now + self._drawn(RETRY_S), "down": now}  # when each way is tried
        self.moves: list[tuple[float, int]] = []  # (when, threads) of every change it kept
        self.restart()

    @property
    def threads(self) -> int:
        return self.rungs[self.at if self.probe is None else self.probe]

    def restart(self) -> None:
        """Start a new window: the time since the last tick was not the loop's work."""
        self.t0, self.cpu0 = self.clock(), self.cpu_clock()
        self.units = self.steps = 0

    def tick(self, units: float = 1.0) -> None:
        if not self.adapt:
            return
        self.units += units
        self.steps += 1
        now = self.clock()
        wall = now - self.t0
        hopeless = (self.probe is not None and self.base_rate > 0
                    and wall > GIVE_UP * self.units / self.base_rate)
        if not hopeless and (wall < WINDOW_S or self.steps < MIN_STEPS):
            return
        share = (self.cpu_clock() - self.cpu0) / (max(wall, 1e-9) * self.threads)
        self._window(self.units / max(wall, 1e-9), share, now)

    def _window(self, rate: float, share: float, now: float) -> None:
        others = self.load.others() if self.load is not None else None
        if self.probe is not None:  # the try is over: keep the faster count
            tried, self.probe = self.probe, None
            way = "up" if tried < self.at else "down"
            if rate > self.base_rate * GAIN:
                self.at, self.base_rate = tried, rate
                self.moves.append((now, self.rungs[tried]))
                self.wait = {"up": RETRY_S, "down": RETRY_S}
                self.next = {"up": now + (0.0 if way == "up" else self._drawn(RETRY_S)),
                             "down": now}
                if way == "down":  # more threads are worth a try once this load lightens
                    self.load_at_failure = others if others is not None else math.inf
            else:
                self.wait[way] = min(self.wait[way] * BACKOFF, MAX_WAIT_S)
                self.next[way] = now + self._drawn(self.wait[way])
                if way == "up":
                    self.load_at_failure = others if others is not None else math.inf
            self._set(self.rungs[self.at])
            return
        self.base_rate = rate
        if self.load_at_failure is None:  # the load as the loop starts: the first to compare
            self.load_at_failure = others if others is not None else math.inf
        # cores that other work has left free since more threads were last tried
        freed = others is not None and others < self.load_at_failure - 0.5
        if share < SHARE_MIN and self.at + 1 < len(self.rungs) and now >= self.next["down"]:
            self._try(self.at + 1)  # these threads did not get their cores: try fewer
        elif self.at > 0 and (now >= self.next["up"] or freed):
            self._try(self.at - 1)  # perhaps the other work is gone: try more
        else:
            self.restart()

    def _drawn(self, wait: float) -> float:
        return wait * (1 - self.jitter.random() / 3)

    def _try(self, rung: int) -> None:
        self.probe = rung
        self._set(self.rungs[rung])

    def _set(self, n: int) -> None:
        self.apply(n)
        self.restart()
