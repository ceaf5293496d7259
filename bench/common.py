"""Shared by the asv benchmarks.

Set ``FASTOPT_BENCH_SMOKE=1`` for a run-once check of every benchmark (CI): sizes shrink to
1,000 elements and the parameter grids to a few representative values, because asv runs
each parameter combination in its own process (and importing torch alone takes seconds).
"""

import os

import numpy as np

from fastopt.cli.bench import CONFIGS, TORCH_FUSED, TRAFFIC, import_torch  # noqa: F401

SMOKE = bool(os.environ.get("FASTOPT_BENCH_SMOKE"))


def sizes(*values):
    return [1000] if SMOKE else [int(v) for v in values]


def grid(values, smoke):
    """``values``, or the ``smoke`` subset in a smoke run."""
    return list(smoke) if SMOKE else list(values)


def data(size, dtype, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(size).astype(dtype)
    g = (rng.standard_normal(size) * 1e-3).astype(dtype)
    return p, g
