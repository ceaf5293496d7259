"""Tunable constants of the CPU kernels (measured on a 2-core AVX2 machine, see docs/performance.md)."""

#: Buffers with fewer elements than this run the serial kernel: waking the thread pool
#: costs more than the update itself below this size.
PARALLEL_MIN_SIZE = 1 << 15

#: Fixed block size of the gradient-norm reduction. Partial sums are taken over these
#: blocks in a fixed order, so the norm is bit-identical for any thread count.
REDUCTION_BLOCK = 1 << 14
