"""Wall time of ``import fastopt`` plus the first Adam step in a fresh interpreter.

Usage: python bench/first_step.py [--repeat 5]

Runs once with an empty numba cache directory (cold: everything compiles) and then
repeatedly with the filled cache (warm: compiled code is loaded from disk).
"""

import argparse
import os
import subprocess
import sys
import tempfile

CHILD = """
import time
start = time.perf_counter()
import numpy as np
import fastopt
p = np.zeros(1000, np.float32)
fastopt.Adam(p).step(np.ones(1000, np.float32))
print(time.perf_counter() - start)
"""


def run(cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache_dir:
        cold = run(cache_dir)
        warm = sorted(run(cache_dir) for _ in range(args.repeat))
    print(f"import + first step, cold cache: {cold:.2f} s")
    print(
        f"import + first step, warm cache: median {warm[len(warm) // 2]:.2f} s "
        f"(min {warm[0]:.2f}, max {warm[-1]:.2f})"
    )


if __name__ == "__main__":
    main()
