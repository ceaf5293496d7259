"""Step time of fastopt against a bandwidth ceiling, NumPy and torch, measured side by side.

Usage: python bench/step_speed.py [--sizes 1e7 5e7] [--optimizers adam sgd_momentum ...]
                                  [--dtype float32] [--rounds 15] [--threads 2] [--json out.json]

Every implementation runs one step per round, in a shuffled order, in this one process, so
the ratios are not disturbed by the memory bandwidth drifting between processes. "stream" is
a kernel with exactly the update's memory traffic and trivial arithmetic: the ceiling.
"""
import argparse
import json
import os
import platform
import random
import sys
import time

import numpy as np

try:  # import torch before numba starts its thread pool (fastopt guards this too)
    import torch
except ImportError:
    torch = None

sys.path.insert(0, os.path.dirname(__file__))
import fastopt  # noqa: E402
from common import CONFIGS, TORCH_HAS_FUSED, TRAFFIC, numpy_step, stream_step  # noqa: E402


def measure(name, size, dtype, rounds, with_numpy, rng):
    cls, options, _ = CONFIGS[name]
    p = rng.standard_normal(size).astype(dtype)
    g = (rng.standard_normal(size) * 1e-3).astype(dtype)
    opt = getattr(fastopt, cls)(p, **options)
    impls = {"fastopt": lambda: opt.step(g)}
    impls["stream"] = stream_step(name, size, dtype, g)
    if with_numpy:
        p_np, state, counter = p.copy(), {}, [0]

        def numpy_impl():
            counter[0] += 1
            numpy_step(name, options, p_np, g, state, counter[0])
        impls["numpy"] = numpy_impl
    if torch is not None:
        from common import torch_optimizer
        modes = ["fused", "foreach"] if cls in TORCH_HAS_FUSED else ["foreach"]
        for mode in modes:
            topt = torch_optimizer(torch, name, size, dtype, rng, mode)
            impls[f"torch_{mode}"] = topt.step
    for fn in impls.values():  # compile and warm up
        fn(), fn()
    times = {k: [] for k in impls}
    order = list(impls)
    for _ in range(rounds):
        random.shuffle(order)
        for key in order:
            start = time.perf_counter()
            impls[key]()
            times[key].append(time.perf_counter() - start)
    reads, writes = TRAFFIC[name]
    nbytes = (reads + writes) * size * np.dtype(dtype).itemsize
    med = {k: float(np.median(v)) for k, v in times.items()}
    row = {"optimizer": name, "size": size, "dtype": np.dtype(dtype).name,
           "bytes_per_step": nbytes, "median_s": med,
           "fastopt_gbps": nbytes / med["fastopt"] / 1e9,
           "fraction_of_stream": med["stream"] / med["fastopt"]}
    for key in med:
        if key not in ("fastopt", "stream"):
            row[f"speedup_vs_{key}"] = med[key] / med["fastopt"]
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e3, 1e5, 1e7])
    parser.add_argument("--optimizers", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-numpy", action="store_true", help="skip the slow NumPy baseline")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        fastopt.set_num_threads(args.threads)
        if torch is not None:
            torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    header = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "threads": fastopt.get_num_threads(), "python": platform.python_version(),
              "numpy": np.__version__, "numba": __import__("numba").__version__,
              "torch": None if torch is None else torch.__version__, "fastopt": fastopt.__version__}
    print(" ".join(f"{k}={v}" for k, v in header.items()))
    print(f"{'optimizer':17s} {'size':>9s} {'fastopt ms':>11s} {'GB/s':>6s} {'%stream':>8s} "
          f"{'x numpy':>8s} {'x torch fused':>13s} {'x torch foreach':>15s}")
    rows = []
    for size in (int(s) for s in args.sizes):
        for name in args.optimizers:
            rounds = args.rounds if size <= 1e7 else max(5, args.rounds // 3)
            if size <= 1e5:
                rounds *= 20
            row = measure(name, size, np.dtype(args.dtype), rounds, not args.no_numpy, rng)
            rows.append(row)
            fmt = lambda k: f"{row[k]:.2f}" if k in row else "-"  # noqa: E731
            print(f"{name:17s} {size:9d} {row['median_s']['fastopt'] * 1e3:11.4f} "
                  f"{row['fastopt_gbps']:6.1f} {row['fraction_of_stream'] * 100:7.0f}% "
                  f"{fmt('speedup_vs_numpy'):>8s} {fmt('speedup_vs_torch_fused'):>13s} "
                  f"{fmt('speedup_vs_torch_foreach'):>15s}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
