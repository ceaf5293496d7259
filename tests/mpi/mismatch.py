"""Run under mpiexec: rank 1 builds a buffer one element longer."""

import numpy as np
from mpi4py import MPI

import fastopt
from fastopt.distributed import DataParallel

comm = MPI.COMM_WORLD
fp = fastopt.FlatParams({"w": np.zeros(10 + comm.Get_rank())})
DataParallel(fastopt.Adam(fp), comm)
