"""A one-line progress indicator for long work, shown only on a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import TextIO

from streams.offline.logio import Line


class Progress:
    """Rate, percentage and ETA by bytes read; redrawn at most ``hz`` times a second."""

    def __init__(self, label: str, out: TextIO | None = None, hz: float = 5.0, force: bool = False) -> None:
        self.label = label
        self.out = sys.stderr if out is None else out  # looked up now: sys.stderr may have been replaced
        self.enabled = force or (hasattr(self.out, "isatty") and self.out.isatty())
        self.interval = 1.0 / hz
        self.started = time.monotonic()
        self._last = 0.0
        self.count = 0
        self.done_bytes = 0
        self.total_bytes = 0

    def wrap_lines(self, lines: Iterator[Line], total_bytes: int) -> Iterator[Line]:
        self.total_bytes = total_bytes
        for line in lines:
            self.count += 1
            self.done_bytes += len(line.raw) + 1
            if self.enabled and self.count % 256 == 0:
                self.update()
            yield line

    def update(self) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < self.interval:
            return
        self._last = now
        elapsed = max(now - self.started, 1e-9)
        rate = self.count / elapsed
        text = f"\r{self.label}: {self.count:,} events  {rate:,.0f}/s"
        if self.total_bytes:
            # Compressed inputs make the fraction approximate; clamp rather than show >100%.
            frac = min(self.done_bytes / self.total_bytes, 1.0)
            eta = elapsed * (1 - frac) / frac if frac > 0 else 0.0
            text += f"  {frac:6.1%}  ETA {eta:,.0f}s"
        self.out.write(text + "   ")
        self.out.flush()

    def done(self) -> None:
        if self.enabled:
            self.out.write("\r" + " " * 78 + "\r")
            self.out.flush()
