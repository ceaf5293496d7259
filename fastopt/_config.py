"""Tunable constants of the CPU kernels (measured on a 2-core AVX2 machine; see
docs/performance.md).
"""

#: Buffers (and parameter groups) with fewer elements than this run the serial kernel:
#: below it, waking the thread pool costs more than it saves. Measured with
#: bench/threshold.py (Adam, float32, 2 threads): parallel/serial time 1.15 at 8192
#: elements, 0.96 at 16384, 0.85 at 32768.
PARALLEL_MIN_SIZE = 1 << 14

#: Fixed block size of the gradient-norm reduction. Partial sums are taken over these
#: blocks in a fixed order, so the norm is bit-identical for any thread count.
REDUCTION_BLOCK = 1 << 14
