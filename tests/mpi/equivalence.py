"""Run under mpiexec: K ranks with the global batch split K ways, for every case of
problem.CASES (every optimizer; bfloat16 and 8-bit state), with and without ZeRO-1; rank 0
writes the final parameters and the gathered state_dict.

usage: equivalence.py OUT_DIR [RESUME_DIR]
With RESUME_DIR, each run starts from the state saved there after STEPS // 2 steps.
"""

import os
import sys

import numpy as np
from mpi4py import MPI

from fastopt.distributed import DataParallel

sys.path.insert(0, os.path.dirname(__file__))
from problem import CASES, STEPS, global_batch, gradient, make_optimizer  # noqa: E402

comm = MPI.COMM_WORLD
rank, ranks = comm.Get_rank(), comm.Get_size()
out_dir = sys.argv[1]
resume = sys.argv[2] if len(sys.argv) > 2 else None

for index, case in enumerate(CASES):
    options = case.options
    for zero in (False, True):
        fp, opt = make_optimizer(case)
        dp = DataParallel(opt, comm, zero=zero)
        first = 0
        if resume:
            with np.load(os.path.join(resume, f"half_{index}_{int(zero)}.npz")) as saved:
                fp.data[:] = saved["params"]
                dp.load_state_dict({k[3:]: saved[k] for k in saved.files if k.startswith("sd.")})
            first = STEPS // 2
        for step in range(first, STEPS):
            x, y = global_batch(step, dim=case.dim)
            mine = np.array_split(np.arange(len(y)), ranks)[rank]
            gradient(fp, x[mine], y[mine])
            if step == 5 and options.get("skip_nonfinite") and rank == ranks - 1:
                fp.grad[0] = np.nan  # one rank's NaN must skip the step everywhere
            dp.step()
            if step == STEPS // 2 - 1 and not resume:
                sd = dp.state_dict()
                if rank == 0:
                    np.savez(
                        os.path.join(out_dir, f"half_{index}_{int(zero)}.npz"),
                        params=fp.data,
                        **{f"sd.{k}": v for k, v in sd.items()},
                    )
        sd = dp.state_dict()
        if rank == 0:
            np.savez(
                os.path.join(out_dir, f"final_{index}_{int(zero)}.npz"),
                params=fp.data,
                state_bytes=dp.state_bytes(),
                **{f"sd.{k}": v for k, v in sd.items()},
            )
