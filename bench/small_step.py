"""Per-step overhead at small sizes: a full ``step()`` (schedule, checks, kernel), back to back.

Usage: python bench/small_step.py [--size 1000] [--steps 20000]
"""

import argparse
import time

import numpy as np

import fastopt  # noqa: E402
from fastopt.cli.bench import CONFIGS  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    dtype = np.dtype(args.dtype)
    print(f"size={args.size} dtype={dtype} steps={args.steps}")
    for name, (cls, options) in CONFIGS.items():
        results = {}
        for mode in ("flatparams", "explicit grad", "schedule + clip"):
            fp = fastopt.FlatParams([np.zeros(args.size, dtype)])
            fp.grad[:] = 1e-3
            extra = (
                {"lr": lambda t: 1e-3 / (1 + 1e-4 * t), "max_grad_norm": 1.0}
                if mode == "schedule + clip"
                else {}
            )
            opt = getattr(fastopt, cls)(fp, **{**options, **extra})
            grad = fp.grad
            step = (lambda: opt.step(grad)) if mode == "explicit grad" else opt.step  # noqa: B023
            for _ in range(100):
                step()
            best = float("inf")
            for _ in range(5):
                start = time.perf_counter()
                for _ in range(args.steps // 5):
                    step()
                best = min(best, (time.perf_counter() - start) / (args.steps // 5))
            results[mode] = best * 1e6
        print(f"{name:17s} " + "  ".join(f"{k}: {v:5.1f} us" for k, v in results.items()))


if __name__ == "__main__":
    main()
