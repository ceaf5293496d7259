r"""pytest-benchmark: one optimizer step, fastopt beside naive NumPy and torch.optim (fused
and foreach where torch has them), for quick A/B comparisons in a working tree. asv keeps the
history across commits (``bench/bench_*.py``); see docs/performance.md for which answers what.

Every case is built, compiled and warmed before the timed region. The groups put the
implementations of one configuration, size and dtype side by side::

    python -m pytest bench --benchmark-only --benchmark-group-by=group
    python -m pytest bench --benchmark-only --benchmark-autosave          # a baseline
    python -m pytest bench --benchmark-only --benchmark-compare \\
        --benchmark-compare-fail=min:10%                                   # the gate

``extra_info`` holds the bytes a step moves, its GB/s and, for fastopt, its fraction of a
stream kernel with the same traffic (timed in the same process just before).
"""

import numpy as np
import pytest

from fastopt.cli.bench import (
    CONFIGS,
    TORCH_FUSED,
    bytes_per_step,
    fastopt_stepper,
    numpy_stepper,
    stream_seconds,
    torch_stepper,
)

from .common import data, sizes


def cases():
    for name, (cls, _) in CONFIGS.items():
        dtypes = ["float32", "float64"] if name == "adam" else ["float32"]
        impls = ["fastopt", "numpy", "torch_foreach"]
        if cls in TORCH_FUSED:
            impls.append("torch_fused")
        for size in sizes(1e3, 1e5, 1e7):
            for dtype in dtypes:
                for impl in impls:
                    label = f"{name}-{size:.0e}-{dtype}-{impl}"
                    yield pytest.param(name, size, dtype, impl, id=label)


@pytest.mark.parametrize("name, size, dtype, impl", list(cases()))
def test_step(benchmark, request, name, size, dtype, impl):
    p, g = data(size, np.dtype(dtype))
    if impl == "fastopt":
        step = fastopt_stepper(name, p, g)
    elif impl == "numpy":
        step = numpy_stepper(name, p, g)
    else:
        torch = request.getfixturevalue("torch_module")
        step = torch_stepper(torch, name, p, g, impl.split("_")[1])
    step()
    step()  # compiled (or loaded) and warmed outside the timed region
    benchmark.group = f"{name} {size:.0e} {dtype}"
    nbytes = bytes_per_step(name, size, dtype)
    benchmark.extra_info["bytes_per_step"] = nbytes
    stream = stream_seconds(name, g) if impl == "fastopt" and not benchmark.disabled else None
    benchmark(step)
    if benchmark.disabled:
        return
    median = benchmark.stats.stats.median
    benchmark.extra_info["gbps"] = nbytes / median / 1e9
    if stream is not None:
        benchmark.extra_info["fraction_of_stream"] = stream / median
