"""Argument parsing for the command line: one-line errors, checked values and output paths.

Every value is checked when it is parsed, and every output path before any work starts, so
a bad argument costs nothing and ends with one line and exit status 2.
"""

import argparse
import ast
import math
import os
import sys


class CommandError(Exception):
    """A bad argument found after parsing (an unknown option key, a PROBLEM that cannot be
    loaded, an optimizer option the optimizer rejects): exit status 2, one line.
    """


class UserCodeFailed(Exception):
    """The user's own code raised (importing or calling PROBLEM, or inside ``loss_grad``):
    its traceback is shown (it is the ``__cause__``), then one line; exit status 1.
    """


class ShowDefaults(argparse.HelpFormatter):
    """Help that ends with the default, unless the help names it or there is none."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        none = default is None or default is False or default is argparse.SUPPRESS
        if "default" in text or none or (isinstance(default, list) and not default):
            return text
        return f"{text} (default: %(default)s)"


class DescriptionAsIs(ShowDefaults, argparse.RawDescriptionHelpFormatter):
    """:class:`ShowDefaults`, with the description's own line breaks."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (and exit status 2)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", ShowDefaults)
        super().__init__(*args, **kwargs)

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def _number(text, kind):
    try:
        value = float(text) if kind is float else int(text)
    except ValueError:
        if kind is int:  # "1e4" is an integer too
            try:
                value = float(text)
            except ValueError:
                value = None
            if value is not None and math.isfinite(value) and value == int(value):
                return int(value)
        raise argparse.ArgumentTypeError(
            f"expected {'a number' if kind is float else 'an integer'}, got {text!r}"
        ) from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text):
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def nonnegative_int(text):
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def positive_float(text):
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def nonnegative_float(text):
    value = _number(text, float)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def thread_count(text):
    """1 up to numba's thread limit (the machine's cores unless NUMBA_NUM_THREADS is set)."""
    from numba import config

    value = positive_int(text)
    if value > config.NUMBA_NUM_THREADS:
        raise argparse.ArgumentTypeError(
            f"expected 1 to {config.NUMBA_NUM_THREADS} threads (numba's limit here), got {value}"
        )
    return value


def output_path(text):
    """A file path whose folder exists and is writable (checked before any work)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a file path, got ''")
    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"cannot write {text}: no folder {folder}")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text}: folder {folder} is read-only")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"cannot write {text}: it is a folder")
    return text


def optional_output_path(text):
    """:func:`output_path`, or '' for none."""
    return text if text == "" else output_path(text)


def plot_path(text):
    """:func:`output_path` for an image, as matplotlib will write it: the extension must be
    a format matplotlib can save, and a path without one gets matplotlib's default
    (``savefig.format``, normally ``.png``), as ``savefig`` would add it.

    Without matplotlib the path is only checked as an output path: :func:`require_plotting`
    then ends the command.
    """
    if not text:
        return output_path(text)
    try:
        from matplotlib import rcParams
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        return output_path(text)
    extension = os.path.splitext(text)[1][1:]
    if not extension:
        text = text.rstrip(".") + "." + rcParams["savefig.format"]
        extension = os.path.splitext(text)[1][1:]
    formats = FigureCanvasBase.get_supported_filetypes()
    if extension.lower() not in formats:
        raise argparse.ArgumentTypeError(
            f"cannot write {text}: matplotlib cannot save .{extension} images (expected one "
            f"of: {', '.join(sorted(formats))})"
        )
    return output_path(text)


def optional_plot_path(text):
    """:func:`plot_path`, or '' for none."""
    return text if text == "" else plot_path(text)


def option(text):
    """``KEY=VALUE``: the value as a Python literal (``0.9``, ``True``, ``(0.9, 0.99)``),
    ``true``/``false``, or else the text itself.
    """
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    value = value.strip()
    if value.lower() in ("true", "false"):
        return key, value.lower() == "true"
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def require_plotting():
    """Raise CommandError now, not after the work, when --plot cannot be honoured."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CommandError(
            "--plot needs matplotlib, which is not installed: pip install 'fastopt[plot]'"
        ) from None
