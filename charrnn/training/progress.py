"""What a person sees while a run trains: a live Rich display on a terminal, log lines elsewhere.

Everything goes to stderr; stdout stays free for the product (sampled text).
"""

from __future__ import annotations

import math
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from charrnn.errors import printable

SAMPLE_LINES = 4  # lines of each sample the display shows


def fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Reporter:
    """Plain log lines: one per evaluation and one every `every` seconds (for logs and pipes)."""

    def __init__(self, console: Console | None = None, every: float = 30.0):
        self.console = console or Console(stderr=True, highlight=False)
        self.every = every
        self._last = 0.0

    def start(self, description: str) -> None:
        self.say(description)

    def say(self, line: str) -> None:
        # a Text object: corpus names and paths are never read as markup; printable: nor as
        # escape sequences
        self.console.print(Text(printable(line)), soft_wrap=True)

    def warn(self, line: str) -> None:
        self.console.print(Text("warning: " + printable(line), style="yellow"), soft_wrap=True)

    def step(self, s: dict) -> None:
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self.say(self._step_line(s))

    @staticmethod
    def _step_line(s: dict) -> str:
        return (f"step {s['step']}  epoch {s['epoch']:.2f}  train loss {s['train_loss']:.4f}  "
                f"{s['chars_per_sec']:,.0f} chars/s  lr {s['lr']:.2e}  "
                f"elapsed {fmt_duration(s['elapsed'])}  eta {fmt_duration(s['eta'])}")

    def evaluation(self, r: dict) -> None:
        mark = "  (best)" if r.get("best") else ""
        self.say(f"step {r['step']}  epoch {r['epoch']:.2f}  train loss {r['train_loss']:.4f}  "
                 f"val loss {r['val_loss']:.4f} nats ({r['val_bpc']:.3f} bits/char)  "
                 f"{r['chars_per_sec']:,.0f} chars/s  elapsed {fmt_duration(r['elapsed'])}{mark}")

    def sample(self, step: int, text: str) -> None:
        """A few lines of the model's own text, control characters shown as symbols."""
        from charrnn.output import visible

        lines = "".join(visible(ch) for ch in text).strip("\n").splitlines()[:SAMPLE_LINES]
        self.say(f"sample at step {step}:")
        for line in lines:
            self.console.print(Text("  " + line[:200], style="dim"), soft_wrap=True)

    def last(self, s: dict) -> None:
        """The figures of the run's last step, once it has ended (a live display shows them)."""

    def finish(self) -> None:
        pass


class Silent(Reporter):
    """What a torchrun job's ranks other than 0 show: nothing (rank 0 speaks for the job)."""

    def say(self, line: str) -> None:
        pass

    def warn(self, line: str) -> None:
        pass

    def step(self, s: dict) -> None:
        pass

    def evaluation(self, r: dict) -> None:
        pass

    def sample(self, step: int, text: str) -> None:
        pass


class _BarAndFigures(Progress):
    """The bar on one line and the run's figures on the next, so that neither is cut short on
    an 80-column terminal."""

    def get_renderables(self):
        yield self.make_tasks_table(self.tasks)
        for task in self.tasks:
            yield Text("  " + task.fields["figures"], overflow="ellipsis", no_wrap=True)


class LiveReporter(Reporter):
    """A Rich progress bar with the current figures, redrawn in place on a terminal."""

    def __init__(self, console: Console | None = None):
        super().__init__(console)
        self.progress = _BarAndFigures(
            TextColumn("{task.description}", style="bold", markup=False), BarColumn(),
            TextColumn("{task.percentage:>3.0f}%", markup=False), TimeElapsedColumn(),
            TextColumn("eta {task.fields[eta]}", markup=False),
            console=self.console, transient=False, refresh_per_second=4,
        )
        self.task = None
        self.val = ""

    def start(self, description: str) -> None:
        self.progress.start()
        self.say(description)
        self.task = self.progress.add_task("train", total=1.0, eta="?", figures="")

    def say(self, line: str) -> None:
        self.progress.console.print(Text(printable(line)), soft_wrap=True)

    def step(self, s: dict) -> None:
        figures = (f"step {s['step']} · epoch {s['epoch']:.2f} · loss {s['train_loss']:.3f}"
                   f"{self.val} · {s['chars_per_sec']:,.0f} chars/s")
        self.progress.update(self.task, completed=min(s["progress"], 1.0),
                             eta=fmt_duration(s["eta"]), figures=figures)

    def evaluation(self, r: dict) -> None:
        self.val = f" · val {r['val_loss']:.3f} ({r['val_bpc']:.2f} bpc)"
        super().evaluation(r)

    def last(self, s: dict) -> None:
        self.step(s)

    def finish(self) -> None:
        if self.task is not None:
            self.progress.stop()
            self.task = None


def quiet_reporter() -> Reporter:
    """A reporter that prints nothing (the Python API's, unless asked for progress)."""
    return Reporter(Console(stderr=True, quiet=True))


def reporter_for(console: Console | None = None) -> Reporter:
    console = console or Console(stderr=True, highlight=False)
    if console.is_terminal and sys.stderr.isatty():
        return LiveReporter(console)
    return Reporter(console)


def start_line(t) -> str:
    """The line a run starts with: the model, the text, the device and threads, the batch, the
    steps planned, the run directory (t: a training.loop.Trainer)."""
    from pathlib import Path

    s, mc, c = t.train_streams, t.model.config, t.setup.corpus
    n_params = sum(p.numel() for p in t.model.parameters())
    where = (f"{t.world.label()} on {t.device.type}" if t.world.distributed else str(t.device))
    if t.device.type == "cpu" and not t.world.distributed:
        th = t.setup.threads
        where += (f" ({th.count} of {th.most} threads, following the load)" if th.adapt
                  and th.most > 1 else f" ({th.count} thread{'s' if th.count != 1 else ''}: "
                  f"{th.reason})")
    text = c.source if Path(c.source or ".").is_dir() else c.path
    return (f"training {mc.layers}x{mc.hidden_size} {mc.model} ({n_params:,} parameters) on "
            f"{text} ({len(c.ids):,} characters, {len(t.vocab)} distinct) with {where}; batch "
            f"{s.batch} x {s.seq_len}; {t.pacer.end:,} steps planned; run in {t.run}")


class Throughput:
    """Characters per second over the last few seconds, not the whole run (the display's)."""

    def __init__(self, chars_per_step: int, step: int, clock=time.monotonic,
                 window: float = 5.0):
        self.chars_per_step, self.window = chars_per_step, window
        self.t, self.step = clock(), step
        self.last = 0.0  # the rate over the last whole window

    def rate(self, step: int, now: float) -> float:
        if step == self.step:  # (just after a new window began)
            return self.last
        rate = (step - self.step) * self.chars_per_step / max(now - self.t, 1e-9)
        if now - self.t >= self.window:
            self.t, self.step, self.last = now, step, rate
        return rate
