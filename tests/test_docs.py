"""The signatures the documentation shows are the real ones."""

import inspect
import pathlib
import re

import pytest

import fastopt

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCUMENTED = [
    ("docs/schedules.md", "plot_schedule", fastopt.plot_schedule),
]


@pytest.mark.parametrize("doc, name, function", DOCUMENTED, ids=[d[1] for d in DOCUMENTED])
def test_documented_signatures_match(doc, name, function):
    text = (ROOT / doc).read_text()
    shown = re.findall(rf"`{name}(\(.*?\))`", text)
    assert shown, f"{doc} does not show {name}(...)"
    for signature in shown:
        assert _same_parameters(signature, function), (signature, inspect.signature(function))


def _same_parameters(shown, function):
    """``shown`` names the parameters in order, with the same kinds (``*`` included) and
    defaults, leaving out annotations.
    """
    expected = []
    star = False
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind is parameter.KEYWORD_ONLY and not star:
            expected.append("*")
            star = True
        default = "" if parameter.default is parameter.empty else f"={parameter.default!r}"
        expected.append(parameter.name + default)
    return shown == f"({', '.join(expected)})"
