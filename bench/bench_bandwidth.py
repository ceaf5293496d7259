"""Achieved memory bandwidth of the Adam step, and its fraction of a kernel with the same
memory traffic (read 4 arrays, write 3), both measured alternately in this process.
"""

import numpy as np

from fastopt.cli import bench as benchmark

from .common import grid, sizes


class AdamBandwidth:
    params = (sizes(1e7, 5e7), grid(["float32", "float64"], ["float32"]))
    param_names = ["size", "dtype"]
    timeout = 600

    def setup(self, size, dtype):
        self.row = benchmark.measure("adam", size, np.dtype(dtype), rounds=10, numpy=False)

    def track_gbps(self, size, dtype):
        return self.row["gbps"]

    track_gbps.unit = "GB/s"

    def track_fraction_of_stream(self, size, dtype):
        return self.row["fraction_of_stream"]

    track_fraction_of_stream.unit = "ratio"
