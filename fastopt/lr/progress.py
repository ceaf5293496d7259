"""A tiny progress bar on stderr: silent off a terminal, and for work that ends quickly."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(
        self,
        total: int,
        label: str,
        enabled: bool | None = None,
        delay: float = 0.5,
        stream: TextIO | None = None,
    ) -> None:
        self.total, self.label, self.done = total, label, 0
        self.stream = stream or sys.stderr
        if enabled is None:
            enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled = bool(enabled)
        self.start = time.monotonic()
        self.delay = delay
        self.shown = False

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done += n
        if not self.enabled or time.monotonic() - self.start < self.delay:
            return
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
            f"{self.done}/{self.total} {note:<20s}"
        )
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
