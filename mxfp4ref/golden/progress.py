"""A tiny progress bar on stderr (no dependency): ``[#####.....] 12/32 experts  3.1 s``.

Drawn with carriage returns when stderr is a terminal; otherwise one line per stage at its end, so
logs stay readable. ``quiet=True`` silences it.
"""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, quiet: bool = False, stream=None, width: int = 30):
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._label, self._total, self._t0, self._last = "", 0, 0.0, 0.0

    def stage(self, label: str, total: int = 1) -> "Progress":
        """Start a stage of ``total`` steps."""
        self._label, self._total, self._t0, self._last = label, max(int(total), 1), time.perf_counter(), 0.0
        self.update(0)
        return self

    def update(self, done: int) -> None:
        if self.quiet:
            return
        now = time.perf_counter()
        finished = done >= self._total
        if not self.tty:
            if finished:
                self.stream.write(f"{self._label:<28} done in {now - self._t0:5.1f} s\n")
                self.stream.flush()
            return
        if not finished and now - self._last < 0.1 and done:
            return
        self._last = now
        fill = self.width * done // self._total
        bar = "#" * fill + "." * (self.width - fill)
        self.stream.write(f"\r{self._label:<28} [{bar}] {done}/{self._total}  {now - self._t0:5.1f} s")
        if finished:
            self.stream.write("\n")
        self.stream.flush()

    def iterate(self, items, label: str):
        """Yield ``items`` while drawing the bar for ``label``."""
        items = list(items)
        self.stage(label, len(items))
        for i, item in enumerate(items):
            yield item
            self.update(i + 1)

    def note(self, text: str) -> None:
        if not self.quiet:
            self.stream.write(text + "\n")
            self.stream.flush()


class ticking:
    """Context manager for one long call without inner steps: redraws ``label ... 12.3 s`` every
    half second from a helper thread (an honest elapsed-time display, no invented percentage)."""

    def __init__(self, progress: Progress, label: str):
        self.p, self.label = progress, label

    def __enter__(self):
        import threading

        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        if not self.p.quiet and self.p.tty:
            def loop():
                while not self._stop.wait(0.5):
                    self.p.stream.write(f"\r{self.label:<28} ... {time.perf_counter() - self._t0:5.1f} s")
                    self.p.stream.flush()
            self._thread = threading.Thread(target=loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if getattr(self, "_thread", None):
            self._thread.join()
        if not self.p.quiet:
            end = "\r" if self.p.tty else ""
            self.p.stream.write(f"{end}{self.label:<28} done in {time.perf_counter() - self._t0:5.1f} s\n")
            self.p.stream.flush()
        return False
