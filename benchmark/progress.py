"""Per-case progress: done/total, img/s and ETA of the live answers, live vs replayed.

On a terminal one line is redrawn in place (at most every ``interval_s``);
elsewhere (CI logs) a line is printed every ``step_percent`` percent. The
plugin writes through pytest's terminal reporter with capture suspended, so
the progress shows in a plain ``pytest cases`` run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

Write = Callable[[str, bool], None]  # (text, redraw: replace the current line)


def stderr_writer(text: str, redraw: bool) -> None:
    sys.stderr.write(("\r\x1b[2K" + text) if redraw else text + "\n")
    sys.stderr.flush()


class Progress:
    """``progress.start(label, total, replayed)``, ``advance(n)`` per live answer, ``close()``."""

    def __init__(self, write: Write = stderr_writer, *, tty: bool | None = None, interval_s: float = 0.2,
                 step_percent: int = 10, clock: Callable[[], float] = time.monotonic) -> None:
        self.write = write
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.interval_s = interval_s
        self.step_percent = step_percent
        self.clock = clock
        self.label, self.total, self.replayed, self.live = "", 0, 0, 0
        self._t0 = self._last = 0.0
        self._next_step = 0
        self._printed = -1  # answers done at the last line printed (non-TTY)
        self._open = False

    def start(self, label: str, total: int, *, replayed: int = 0) -> None:
        self.label, self.total, self.replayed, self.live = label, total, replayed, 0
        self._t0 = self._last = self.clock()
        self._next_step = self.step_percent
        self._open = True
        self._emit(force=True)

    def advance(self, n: int = 1) -> None:
        self.live += n
        self._emit()

    @property
    def done(self) -> int:
        return self.replayed + self.live

    def line(self) -> str:
        elapsed = self.clock() - self._t0
        rate = self.live / elapsed if elapsed > 0 and self.live else 0.0
        left = self.total - self.done
        eta = f"ETA {_duration(left / rate)}" if rate and left else ("done" if not left else "ETA -")
        pct = 100 * self.done // self.total if self.total else 100
        return (f"{self.label}: {self.done}/{self.total} ({pct}%) {rate:.1f} img/s {eta} "
                f"[live {self.live}, replayed {self.replayed}]")

    def _emit(self, *, force: bool = False) -> None:
        if not self._open:
            return
        now = self.clock()
        if self.tty:
            if force or now - self._last >= self.interval_s or self.done >= self.total:
                self._last = now
                self.write(self.line(), True)
            return
        pct = 100 * self.done // self.total if self.total else 100
        if force or pct >= self._next_step:
            while self._next_step <= pct:
                self._next_step += self.step_percent
            self._printed = self.done
            self.write(self.line(), False)

    def status(self, text: str, *, news: bool = True) -> None:
        """A line between answers (e.g. a batch being polled): on a terminal it replaces the
        current line; elsewhere it is printed when ``news`` (more than the time changed)."""
        if self._open and (self.tty or news):
            self.write(f"{self.label}: {text}", self.tty)

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        if self.tty:
            self.write(self.line(), True)
            self.write("", False)
        elif self._printed != self.done:
            self.write(self.line(), False)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
