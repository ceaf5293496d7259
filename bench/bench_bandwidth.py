"""Achieved memory bandwidth of the Adam step, and its fraction of a kernel with the same
memory traffic (read 4 arrays, write 3), both measured alternately in this process.
"""

import numpy as np

from fastopt.cli import bench as benchmark

from .common import SMOKE, grid, sizes


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


class Machine:
    """The stream kernel's bandwidth on this machine (Adam's traffic, float32, 1e7): the
    ceiling every update is measured against, so that two machines can be compared.
    """

    timeout = 120

    def track_stream_gbps(self):
        return benchmark.stream_bandwidth(1000 if SMOKE else 10_000_000)

    track_stream_gbps.unit = "GB/s"
