"""A dependency-free progress bar for the demos (stderr; redrawn live on a terminal, written once when done
elsewhere)."""
from __future__ import annotations

import sys
import time


class Progress:
    """``with Progress(total, "label") as bar: ... bar.update(loss=...)``."""

    def __init__(self, total, label="", quiet=False, width=30, stream=None):
        self.total, self.label, self.width = total, label, width
        self.stream = stream or sys.stderr
        self.quiet = quiet
        # redraw in place on a terminal; elsewhere (logs, CI) write the finished bar once
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.count = 0
        self.start = time.perf_counter()
        self._last = 0.0

    def __enter__(self):
        return self

    def update(self, n=1, **fields):
        self.count += n
        now = time.perf_counter()
        if self.quiet or (self.count < self.total and (not self.live or now - self._last < 0.1)):
            return
        self._last = now
        frac = self.count / self.total if self.total else 1.0
        filled = int(self.width * frac)
        extra = " ".join(f"{k}={v:.3e}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
                          f"{self.count}/{self.total} {now - self.start:5.1f}s {extra}")
        self.stream.flush()

    def __exit__(self, *exc):
        if not self.quiet and (self.live or self.count >= self.total):
            self.stream.write("\n")
            self.stream.flush()
        return False
