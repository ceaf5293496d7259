"""Run under mpiexec: learning-rate edits through DataParallel.param_groups, a rejected
gradient that leaves everything untouched, and the released optimizer.
"""

import sys

import numpy as np
from mpi4py import MPI

import fastopt
from fastopt.distributed import DataParallel

comm = MPI.COMM_WORLD
out = sys.argv[1]
results = {}
for zero in (False, True):
    w = np.linspace(-1, 1, 12).reshape(3, 4)
    opt = fastopt.Adam(w, lr=0.1, param_groups=[{"params": slice(0, 5), "lr": 0.05}])
    dp = DataParallel(opt, comm, zero=zero)
    for step in range(6):
        if step == 3:
            for group in dp.param_groups:
                group["lr"] = 0.0
        dp.step(np.full((3, 4), 1.0 + step))
    before = w.copy()
    bad = np.ones(12)
    try:
        dp.step(bad)
    except ValueError as error:
        results[f"error_{int(zero)}"] = str(error)
    assert np.array_equal(bad, np.ones(12)) and np.array_equal(w, before)
    # a bad schedule value: raised before the gradient is summed in place
    good = np.full((3, 4), 0.5)
    for group in dp.param_groups:
        group["lr"] = lambda t: float("nan")
    try:
        dp.step(good)
    except ValueError as error:
        results[f"schedule_error_{int(zero)}"] = str(error)
    assert np.array_equal(good, np.full((3, 4), 0.5)) and np.array_equal(w, before)
    for group in dp.param_groups:
        group["lr"] = 0.0
    if zero:
        try:
            opt.step(np.ones((3, 4)))
        except RuntimeError as error:
            results["released"] = str(error)
        try:
            opt.state_dict()
        except RuntimeError as error:
            results["released_state_dict"] = str(error)
        try:
            opt.load_state_dict(dp.state_dict())
        except RuntimeError as error:
            results["released_load"] = str(error)
    results[f"params_{int(zero)}"] = w.copy()
# a strict load compares the group values as edited through dp.param_groups since the
# last step (with ZeRO the shards keep copies of them)
for zero in (False, True):
    saved = DataParallel(fastopt.Adam(np.ones(8), lr=0.5), comm, zero=zero)
    saved.step(np.ones(8))
    sd = saved.state_dict()
    dp = DataParallel(fastopt.Adam(np.ones(8), lr=0.1), comm, zero=zero)
    dp.param_groups[0]["lr"] = 0.5
    dp.load_state_dict(sd)  # equal as edited: loads
    dp.param_groups[0]["lr"] = 0.9
    try:
        dp.load_state_dict(sd)
    except ValueError as error:
        results[f"edited_load_{int(zero)}"] = str(error)
if comm.Get_rank() == 0:
    np.savez(out, **results)
