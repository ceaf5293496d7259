"""Shared by the asv benchmarks and the scripts in bench/.

Set ``FASTOPT_BENCH_SMOKE=1`` to shrink every size to at most 1e4 elements: CI uses it to
check that every benchmark runs, not to time anything.
"""
import os

import numpy as np

from fastopt.benchmark import CONFIGS, TORCH_FUSED, TRAFFIC, import_torch  # noqa: F401

SMOKE = bool(os.environ.get("FASTOPT_BENCH_SMOKE"))


def sizes(*values):
    if SMOKE:
        return sorted({min(int(v), 10_000) for v in values})
    return [int(v) for v in values]


def data(size, dtype, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(size).astype(dtype)
    g = (rng.standard_normal(size) * 1e-3).astype(dtype)
    return p, g
