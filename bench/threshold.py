"""Where the parallel kernel starts to pay off: serial vs threaded step time by size.

Usage: python bench/threshold.py [--optimizer Adam] [--dtype float32]

Both kernels run alternately in one process; between steps a 4 MB buffer is touched so
each step starts with the optimizer's arrays partly out of cache, as after a forward and
backward pass. The crossover is the size above which ``fastopt._config.PARALLEL_MIN_SIZE``
should send buffers to the parallel kernel.
"""

import argparse
import random
import time

import numpy as np

import fastopt
from fastopt import _config


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--optimizer", default="Adam")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    dtype = np.dtype(args.dtype)
    scratch = np.ones(1 << 20, np.float32)
    print(f"{args.optimizer} {dtype}, {fastopt.get_num_threads()} threads")
    print(f"{'size':>9s} {'serial us':>10s} {'parallel us':>12s} {'parallel/serial':>16s}")
    for size in [1 << k for k in range(10, 21)]:
        opts = {}
        for threshold, label in ((1 << 62, "serial"), (1, "parallel")):
            _config.PARALLEL_MIN_SIZE = threshold
            p = np.zeros(size, dtype)
            opts[label] = (getattr(fastopt, args.optimizer)(p), np.ones(size, dtype))
        times = {k: [] for k in opts}
        for _ in range(3):
            for opt, g in opts.values():
                opt.step(g)
        order = list(opts)
        for _ in range(args.rounds):
            random.shuffle(order)
            for label in order:
                scratch *= 1.0
                opt, g = opts[label]
                start = time.perf_counter()
                opt.step(g)
                times[label].append(time.perf_counter() - start)
        s, p = (np.median(times[k]) * 1e6 for k in ("serial", "parallel"))
        print(f"{size:9d} {s:10.1f} {p:12.1f} {p / s:16.2f}", flush=True)


if __name__ == "__main__":
    main()
