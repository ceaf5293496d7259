"""Data-parallel training of the digits network over MPI.

    mpiexec -n 2 python -m mpi4py -m fastopt.cli.examples.ddp [--zero] [--epochs 20]

Every rank holds the whole network; each global mini-batch of 64 images is split evenly
across the ranks, each computes the mean gradient of its part, ``DataParallel`` averages
the gradients with one collective and every rank applies the same fused update. With any
number of ranks the result matches the single-process run (``python -m
fastopt.cli.examples.ddp``) up to rounding.
"""

import argparse
import time

import numpy as np

from ... import optim
from ...distributed import DataParallel, _mpi
from ..demo import accuracy, init_mlp, loss_and_grad, split_digits


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--zero", action="store_true", help="ZeRO-1: shard optimizer state")
    args = parser.parse_args(argv)
    comm = _mpi().COMM_WORLD
    rank, ranks = comm.Get_rank(), comm.Get_size()
    (x_train, y_train), (x_test, y_test) = split_digits()
    fp = init_mlp(x_train.shape[1], 64, 10, np.float64, seed=0)
    opt = DataParallel(optim.SGD(fp, lr=args.lr, momentum=0.9, nesterov=True), comm, zero=args.zero)
    rng = np.random.default_rng(0)  # the same shuffle on every rank
    seen, compute = 0, 0.0
    for _epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(y_train))
        for begin in range(0, len(order) - args.batch_size + 1, args.batch_size):
            batch = order[begin : begin + args.batch_size]
            mine = np.array_split(batch, ranks)[rank]
            start = time.perf_counter()
            loss_and_grad(fp, x_train[mine], y_train[mine])
            fp.grad *= len(mine) * ranks / len(batch)  # exact global mean for uneven splits
            compute += time.perf_counter() - start
            opt.step()
            seen += len(mine)
    rates = comm.gather((seen, compute), root=0)
    test_accuracy = accuracy(fp, x_test, y_test)
    if rank == 0:
        for r, (n, seconds) in enumerate(rates):
            print(
                f"rank {r}: {n} samples, {n / max(seconds, 1e-9):,.0f} samples/s of "
                f"forward+backward"
            )
        print(
            f"{ranks} rank(s){' ZeRO-1' if args.zero else ''}: {opt.step_count} steps, "
            f"optimizer state {opt.state_bytes()} bytes on rank 0, "
            f"final test accuracy {test_accuracy:.4f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
