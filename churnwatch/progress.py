"""A small progress line for long work: redrawn in place on a terminal, every 10% otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Counts work done against an (estimated) total and shows rate and time left."""

    def __init__(self, label: str, total: int | None, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._interactive = self._stream.isatty()
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if self._interactive and now - self._last_draw >= 0.2:
            self._last_draw = now
            self._stream.write("\r" + self._line(now))
            self._stream.flush()
        elif not self._interactive and self.total:
            decile = min(10, self.done * 10 // self.total)
            if decile > self._last_decile:
                self._last_decile = decile
                self._stream.write(self._line(now) + "\n")

    def finish(self) -> None:
        now = time.monotonic()
        self._stream.write(("\r" if self._interactive else "") + self._line(now, final=True) + "\n")
        self._stream.flush()

    def _line(self, now: float, final: bool = False) -> str:
        elapsed = max(now - self._started, 1e-9)
        rate = self.done / elapsed
        text = f"{self.label}: {self.done:,}"
        if self.total and not final:
            share = min(self.done / self.total, 1.0)
            bar = "#" * int(share * 24)
            left = max(self.total - self.done, 0) / rate if rate else 0.0
            text = f"{self.label} [{bar:<24}] {share:4.0%} {self.done:,}/~{self.total:,}"
            return f"{text}  {rate:,.0f}/s  ~{left:,.0f}s left"
        return f"{text} in {elapsed:,.1f}s ({rate:,.0f}/s)"
