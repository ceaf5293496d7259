"""Data parallelism over MPI: K ranks equal one process, ZeRO-1 shards state, checkpoints
move between rank counts, failures abort promptly. mpiexec is launched from here.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "mpi"))
from problem import CASES, EIGHT_BIT, STEPS, global_batch, gradient, make_optimizer  # noqa: E402

SCRIPTS = Path(__file__).parent / "mpi"
BLOCK = 256


@pytest.fixture(scope="module")
def mpiexec():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        mpi4py = None
    path = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    if mpi4py is None or path is None:
        if os.environ.get("CI"):
            pytest.fail("mpi4py and Open MPI are required in CI: pip install -e '.[test]'")
        pytest.skip("mpi4py / mpiexec not installed (pip install 'fastopt[mpi]')")
    return path


def run(mpiexec, ranks, *args, timeout=180):
    env = dict(
        os.environ,
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMPI_MCA_rmaps_base_oversubscribe="1",
        PYTHONPATH=str(SCRIPTS.parents[1]),
        # the ranks share the cores: BLAS threads of their own only oversubscribe them
        # (the 5000-feature cases ran twice as long with them)
        OPENBLAS_NUM_THREADS="1",
    )
    command = [
        mpiexec,
        "--oversubscribe",
        "-n",
        str(ranks),
        sys.executable,
        "-m",
        "mpi4py",
        *map(str, args),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def reference(index, steps=STEPS):
    """One process, the whole batch."""
    case = CASES[index]
    fp, opt = make_optimizer(case)
    for step in range(steps):
        x, y = global_batch(step, dim=case.dim)
        gradient(fp, x, y)
        if step == 5 and case.options.get("skip_nonfinite"):
            fp.grad[0] = np.nan
        opt.step()
    return fp.data.copy(), opt


def saved_state_dict(saved):
    return {k[3:]: saved[k] for k in saved.files if k.startswith("sd.")}


# K ranks sum the gradient in another order than one process: the gradients, and so the
# state values, differ in their last bits (rtol 1e-12 covers that for full state). A
# compact state stores each value rounded: a value that close to a rounding boundary (a
# midpoint between two bfloat16 words or two 8-bit codes, or for an 8-bit block's absmax
# the float32 rounding of the largest magnitude) can round the other way on one run: one
# word or code apart (up to 1/8 of the value for 8-bit), or one float32 ulp of a scale.
# With ~1e-16 relative differences against code steps of 2**-3..2**-4 that is expected
# about once in 1e9 element-steps, so none here; the comparison still allows FLIPS of them
# per buffer (and their parameters a looser tolerance), and every other stored word or
# code must be equal and decode to the same value bit for bit.
FLIPS = 2


def adjacent(a, b, precision, signed):
    """Whether stored words/codes ``a`` and ``b`` are neighbours (one rounding apart)."""
    a, b = a.astype(np.int64), b.astype(np.int64)
    if precision == "bfloat16":
        return (a >> 15 == b >> 15) & (np.abs(a - b) == 1)
    if not signed:
        return np.abs(a - b) == 1
    same_sign = (a >> 7) == (b >> 7)
    near_zero = ((a & 0x7F) <= 1) & ((b & 0x7F) <= 1)
    return (same_sign & (np.abs(a - b) == 1)) | near_zero


def block_of_elements(bounds, size):
    """The index of each element's 8-bit block (blocks start at each group)."""
    index, first = np.empty(size, np.int64), 0
    for start, stop in bounds:
        index[start:stop] = first + np.arange(stop - start) // BLOCK
        first += -(-(stop - start) // BLOCK)
    return index


def assert_state_matches(loaded, ref_opt, label):
    """``loaded`` (a gathered state_dict in a single-process optimizer) against the
    one-process run; returns the elements whose state may differ by a rounding flip.
    """
    precision = ref_opt.state_precision
    size = ref_opt.param.size
    suspects = np.zeros(size, bool)
    assert loaded.state_precision == precision and loaded.step_count == ref_opt.step_count
    for name in ref_opt.state.names():
        mine, theirs = loaded.state.decoded(name), ref_opt.state.decoded(name)
        what = f"{label} {name}"
        if precision == "full":
            np.testing.assert_allclose(mine, theirs, rtol=1e-12, atol=1e-13, err_msg=what)
            continue
        stored, expected = loaded.state[name], ref_opt.state[name]
        flipped = stored != expected
        signed = name not in ("sum", "square_avg", "exp_avg_sq", "max_exp_avg_sq")
        assert flipped.sum() <= FLIPS, (what, int(flipped.sum()))
        assert adjacent(stored[flipped], expected[flipped], precision, signed).all(), what
        if precision == "8bit":
            scales, scales_ref = loaded.state[name + "_absmax"], ref_opt.state[name + "_absmax"]
            moved = scales != scales_ref
            assert moved.sum() <= FLIPS, (what, "absmax", int(moved.sum()))
            np.testing.assert_allclose(scales, scales_ref, rtol=2.0**-23, err_msg=what)
            blocks = block_of_elements(ref_opt.state.bounds, size)
            flipped |= moved[blocks]
            flipped = np.isin(blocks, blocks[flipped])  # a flip in a block: all its elements
        np.testing.assert_array_equal(mine[~flipped], theirs[~flipped], err_msg=what)
        # one code step: 1/8 of the value from the zero threshold up, below it the
        # threshold itself (2**-15.8 of a block's absmax, signed)
        atol = 2.0**-15 * np.abs(theirs).max(initial=0)
        np.testing.assert_allclose(mine[flipped], theirs[flipped], rtol=0.13, atol=atol)
        suspects |= flipped
    return suspects


def check_against_reference(out_dir, ranks):
    for index, case in enumerate(CASES):
        ref_params, ref_opt = reference(index)
        precision = case.options.get("state_precision", "full")
        assert ref_opt.state_precision == precision
        for zero in (0, 1):
            label = f"{case.name} {precision} zero={zero}"
            with np.load(out_dir / f"final_{index}_{zero}.npz") as saved:
                sd = saved_state_dict(saved)
                params, state_bytes = saved["params"], int(saved["state_bytes"])
            assert str(sd["state_precision"]) == precision
            # the gathered state_dict loads into a single-process optimizer
            _, loaded = make_optimizer(case)
            loaded.load_state_dict(sd)
            suspects = assert_state_matches(loaded, ref_opt, label)
            np.testing.assert_allclose(
                params[~suspects], ref_params[~suspects], rtol=1e-12, atol=1e-13, err_msg=label
            )
            np.testing.assert_allclose(params[suspects], ref_params[suspects], rtol=1e-2)
            full = sum(v.nbytes for k, v in ref_opt.state.items() if k != "step")
            expected = full if not zero else -(-full // ranks) + 8
            if zero and precision == "8bit":
                # shards cut on block boundaries (at most BLOCK / 2 elements from the even
                # split), each with the scales of its blocks (a partial one per group)
                expected = -(-full // ranks) + len(ref_opt.state.names()) * (BLOCK // 2 + 3 * 8)
            assert state_bytes <= expected, (label, state_bytes, expected)
        if case.options.get("skip_nonfinite"):
            assert ref_opt.skipped_steps == 1 and ref_opt.step_count == STEPS - 1


@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_k_ranks_equal_one_process(mpiexec, ranks, tmp_path):
    result = run(mpiexec, ranks, SCRIPTS / "equivalence.py", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    check_against_reference(tmp_path, ranks)


def resume_single_process(index, checkpoint):
    """A single-process optimizer resumed from a gathered ZeRO checkpoint, run to the end."""
    case = CASES[index]
    fp, opt = make_optimizer(case)
    with np.load(checkpoint) as saved:
        fp.data[:] = saved["params"]
        hyperparameters = json.loads(str(saved["sd.hyperparameters"]))
        assert not hyperparameters["partial"]  # every group, whichever rank saved it
        opt.load_state_dict(saved_state_dict(saved))
    for step in range(STEPS // 2, STEPS):
        x, y = global_batch(step, dim=case.dim)
        gradient(fp, x, y)
        opt.step()
    return fp, opt, hyperparameters


def test_checkpoint_moves_between_rank_counts(mpiexec, tmp_path):
    two, three = tmp_path / "two", tmp_path / "three"
    two.mkdir()
    three.mkdir()
    assert run(mpiexec, 2, SCRIPTS / "equivalence.py", two).returncode == 0
    result = run(mpiexec, 3, SCRIPTS / "equivalence.py", three, two)
    assert result.returncode == 0, result.stderr[-3000:]
    check_against_reference(three, 3)  # 2 -> 3 ranks, for every case (8-bit state included)
    # and a single-process optimizer resumes from the gathered ZeRO checkpoint
    fp, _, hyperparameters = resume_single_process(3, two / "half_3_1.npz")
    assert sorted(g["params"] for g in hyperparameters["groups"]) == ["bias", "default"]
    np.testing.assert_allclose(fp.data, reference(3)[0], rtol=1e-12, atol=1e-13)
    # the same with 8-bit state: the 2-rank shards' codes and scales, gathered
    for index in EIGHT_BIT:
        fp, opt, hyperparameters = resume_single_process(index, two / f"half_{index}_1.npz")
        assert opt.state_precision == "8bit"
        assert len(hyperparameters["groups"]) == 3
        ref_params, ref_opt = reference(index)
        suspects = assert_state_matches(opt, ref_opt, f"{CASES[index].name} resumed")
        np.testing.assert_allclose(
            fp.data[~suspects], ref_params[~suspects], rtol=1e-12, atol=1e-13
        )


def test_an_exception_on_one_rank_aborts_the_job(mpiexec):
    start = time.monotonic()
    result = run(mpiexec, 2, SCRIPTS / "failing.py", timeout=120)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "RuntimeError: loss failed at step 2" in output
    assert "MPI_ABORT was invoked on rank 1" in output
    assert time.monotonic() - start < 60


def test_mismatched_buffers_are_reported_at_start(mpiexec):
    result = run(mpiexec, 2, SCRIPTS / "mismatch.py", timeout=120)
    assert result.returncode != 0
    assert (
        "DataParallel needs the same optimizer and parameter buffer on every rank" in result.stderr
    )
    assert "rank 0: 10 x <f8 Adam, rank 1: 11 x <f8 Adam" in result.stderr


def test_ddp_example_matches_the_single_process_run(mpiexec):
    outputs = []
    for ranks, extra in ((1, []), (2, []), (3, ["--zero"])):
        result = run(mpiexec, ranks, "-m", "fastopt.cli.examples.ddp", "--epochs", "3", *extra)
        assert result.returncode == 0, result.stderr[-3000:]
        lines = result.stdout.strip().splitlines()
        assert len(lines) == ranks + 1 and lines[0].startswith("rank 0: ")
        outputs.append(lines[-1])
    accuracies = {line.split("final test accuracy ")[1] for line in outputs}
    assert len(accuracies) == 1, outputs
    assert "ZeRO-1" in outputs[2]


def test_missing_mpi4py_names_the_extra(hide_module):
    hide_module("mpi4py")
    import fastopt
    from fastopt.distributed import DataParallel

    with pytest.raises(ImportError, match=r'pip install "fastopt\[mpi\]"'):
        DataParallel(fastopt.SGD(np.zeros(3)))


def test_lr_edits_reach_the_shards_and_bad_gradients_change_nothing(mpiexec, tmp_path):
    out = tmp_path / "edits.npz"
    result = run(mpiexec, 2, SCRIPTS / "edits.py", out)
    assert result.returncode == 0, result.stderr[-3000:]
    import fastopt

    w = np.linspace(-1, 1, 12).reshape(3, 4)
    opt = fastopt.Adam(w, lr=0.1, param_groups=[{"params": slice(0, 5), "lr": 0.05}])
    for step in range(6):
        if step == 3:
            for group in opt.param_groups:
                group["lr"] = 0.0
        opt.step(np.full((3, 4), 1.0 + step))
    with np.load(out) as saved:
        for zero in (0, 1):
            np.testing.assert_allclose(saved[f"params_{zero}"], w, rtol=1e-14)
            assert "grad must have the shape of params: expects (3, 4) but got (12,)" in str(
                saved[f"error_{zero}"]
            )
        assert "step the DataParallel instead" in str(saved["released"])
        assert "call DataParallel.state_dict()" in str(saved["released_state_dict"])
        assert "call DataParallel.load_state_dict()" in str(saved["released_load"])
        for zero in (0, 1):
            assert "lr: saved 0.5, current 0.9" in str(saved[f"edited_load_{zero}"])
        for zero in (0, 1):
            assert "Invalid learning rate from schedule at step 6: nan" in str(
                saved[f"schedule_error_{zero}"]
            )
