"""The digits demo and ``python -m fastopt sweep --demo``."""

import subprocess
import sys

import pytest

from fastopt.cli import demo


def test_sweep_demo_command(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "sweep.png"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastopt",
            "sweep",
            "--demo",
            "--iterations",
            "25",
            "--plot",
            str(png),
            "--train-epochs",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    assert "pick: lr=" in out and "diverged" in out
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "training with the chosen lr=" in out and "final: train accuracy" in out


def test_digits_problem_batches():
    fp, loss_grad, batches = demo.digits_problem(30)
    assert len(batches) == 31 and all(len(b) == 64 for b in batches[:21])
    cost = loss_grad(fp, fp.grad, batches[0])
    assert 2.0 < cost < 3.0 and fp.grad.any()
