"""Run under mpiexec: rank 1 raises while rank 0 waits in the gradient Allreduce."""

import numpy as np
from mpi4py import MPI

import fastopt
from fastopt.distributed import DataParallel

comm = MPI.COMM_WORLD
fp = fastopt.FlatParams({"w": np.zeros(10)})
dp = DataParallel(fastopt.SGD(fp, lr=0.1), comm)
for step in range(5):
    if step == 2 and comm.Get_rank() == 1:
        raise RuntimeError(f"loss failed at step {step}")
    fp.grad[:] = 1.0
    dp.step()
