"""A tiny progress bar on stderr: silent off a terminal, and for work that ends quickly."""
import sys
import time


class Progress:
    def __init__(self, total, label, enabled=None, delay=0.5, stream=None):
        self.total, self.label, self.done = total, label, 0
        self.stream = stream or sys.stderr
        if enabled is None:
            enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled = bool(enabled)
        self.start = time.monotonic()
        self.delay = delay
        self.shown = False

    def advance(self, n=1, note=""):
        self.done += n
        if not self.enabled or time.monotonic() - self.start < self.delay:
            return
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                          f"{self.done}/{self.total} {note:<20s}")
        self.stream.flush()
        self.shown = True

    def close(self):
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
