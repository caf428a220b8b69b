"""Ctrl-C, SIGTERM and SIGHUP while a run trains: save at the end of the step, then stop."""

from __future__ import annotations

import signal
import threading


class StopOnSignals:
    """While the loop runs, a signal asks `trainer` to stop (it saves at the end of the step);
    a second Ctrl-C quits at once, unsaved. Under torchrun the terminal's Ctrl-C reaches every
    rank twice, so a repeat is ignored, and a rank that fails keeps the handlers: the SIGTERM
    torchrun sends once it sees another rank fail must not cut this rank's own error short."""

    # SIGHUP: a closed terminal or ssh session saves like Ctrl-C and `kill`
    SIGNALS = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP")
                                                 else [])

    def __init__(self, trainer):
        self.trainer = trainer
        self.previous: dict = {}

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.getsignal(sig) for sig in self.SIGNALS}
            for sig in self.previous:
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, kind, *exc) -> None:
        if kind is None or not self.trainer.world.distributed:
            for sig, handler in self.previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        t = self.trainer
        if t.stop_signal is not None:
            if t.world.distributed:
                return  # (torchrun kills its processes itself past its grace period, 30 s)
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, unsaved
        t.interrupt(signum)
        then = ("every process stops at the same step" if t.world.distributed
                else "press Ctrl-C again to quit without saving")
        t.reporter.say(f"stopping: saving a checkpoint at the end of this step ({then})")
