"""The progress bar's terminal rules."""

import pytest


class _Terminal:
    def __init__(self, tty):
        self.text, self.tty = [], tty

    def isatty(self):
        return self.tty

    def write(self, text):
        self.text.append(text)

    def flush(self):
        pass


@pytest.mark.parametrize(
    "tty, enabled, shown",
    [(True, None, True), (False, None, False), (True, False, False), (False, True, True)],
)
def test_progress_bar_only_on_a_terminal_unless_asked(tty, enabled, shown):
    from fastopt.lr.progress import Progress

    stream = _Terminal(tty)
    bar = Progress(10, "sweep", enabled=enabled, delay=0.0, stream=stream)
    for _ in range(10):
        bar.advance(1, "lr=0.1")
    bar.close()
    text = "".join(stream.text)
    assert bool(text) == shown
    if shown:
        assert "sweep [" in text and "10/10" in text and text.endswith("\n")
