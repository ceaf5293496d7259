"""Adam step time under MPI data parallelism, and the share spent communicating.

    mpiexec -n 2 python -m mpi4py bench/mpi_step.py [--size 1e7] [--zero] [--steps 30]

Rank 0 prints the median time of a whole ``DataParallel.step``, of its collective alone
(the same Allreduce, or Reduce_scatter + Allgatherv, on buffers of the same size), the
bytes each rank hands to MPI per step, and the optimizer-state bytes per rank.
"""

import argparse
import time

import numpy as np
from mpi4py import MPI

import fastopt
from fastopt.distributed import DataParallel, shard_bounds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=float, default=1e7)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--zero", action="store_true")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rank, ranks = comm.Get_rank(), comm.Get_size()
    size = int(args.size)
    fp = fastopt.FlatParams([np.zeros(size, np.float32)])
    dp = DataParallel(fastopt.Adam(fp, lr=1e-3), comm, zero=args.zero)
    g = np.random.default_rng(rank).standard_normal(size).astype(np.float32) * 1e-3
    counts, starts = shard_bounds(size, ranks)
    shard = np.empty(counts[rank], np.float32)
    step_times, comm_times = [], []
    for _ in range(args.steps + 3):
        fp.grad[:] = g
        comm.Barrier()
        start = time.perf_counter()
        dp.step()
        comm.Barrier()
        step_times.append(time.perf_counter() - start)
        comm.Barrier()
        start = time.perf_counter()
        if args.zero:
            comm.Reduce_scatter(g, shard, recvcounts=counts, op=MPI.SUM)
            comm.Allgatherv(MPI.IN_PLACE, [fp.data, counts, starts, MPI.FLOAT])
        else:
            comm.Allreduce(MPI.IN_PLACE, fp.grad, op=MPI.SUM)
        comm.Barrier()
        comm_times.append(time.perf_counter() - start)
    step, collective = np.median(step_times[3:]), np.median(comm_times[3:])
    bytes_out = (2 if args.zero else 1) * size * 4 if ranks > 1 else 0
    if rank == 0:
        mode = "ZeRO-1" if args.zero else "replicated"
        print(
            f"Adam {size:.0e} float32, {ranks} rank(s), {mode}: step {step * 1e3:.2f} ms, "
            f"collectives {collective * 1e3:.2f} ms ({collective / step:.0%} of the step), "
            f"{bytes_out / 1e6:.0f} MB passed to MPI per rank per step, optimizer state "
            f"{dp.state_bytes() / 1e6:.0f} MB on rank 0"
        )


if __name__ == "__main__":
    main()
