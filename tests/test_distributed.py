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
from problem import CASES, STEPS, global_batch, make_optimizer  # noqa: E402

SCRIPTS = Path(__file__).parent / "mpi"


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
    name, options = CASES[index]
    fp, opt = make_optimizer(name, options)
    for step in range(steps):
        x, y = global_batch(step)
        r = x @ fp.data[:-1] + fp.data[-1] - y
        fp.grad[:-1] = x.T @ r / len(y)
        fp.grad[-1] = r.mean()
        if step == 5 and options.get("skip_nonfinite"):
            fp.grad[0] = np.nan
        opt.step()
    return fp.data.copy(), opt


def check_against_reference(out_dir, ranks):
    for index in range(len(CASES)):
        ref_params, ref_opt = reference(index)
        for zero in (0, 1):
            with np.load(out_dir / f"final_{index}_{zero}.npz") as saved:
                np.testing.assert_allclose(
                    saved["params"],
                    ref_params,
                    rtol=1e-12,
                    atol=1e-13,
                    err_msg=f"{CASES[index][0]} zero={zero}",
                )
                for key, value in ref_opt.state.items():
                    np.testing.assert_allclose(
                        saved[f"sd.{key}"], value, rtol=1e-12, atol=1e-13, err_msg=key
                    )
                full = sum(v.nbytes for k, v in ref_opt.state.items() if k != "step")
                expected = full if not zero else -(-full // ranks) + 8
                assert int(saved["state_bytes"]) <= expected
        if CASES[index][1].get("skip_nonfinite"):
            assert ref_opt.skipped_steps == 1 and ref_opt.step_count == STEPS - 1


@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_k_ranks_equal_one_process(mpiexec, ranks, tmp_path):
    result = run(mpiexec, ranks, SCRIPTS / "equivalence.py", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    check_against_reference(tmp_path, ranks)


def test_checkpoint_moves_between_rank_counts(mpiexec, tmp_path):
    two, three = tmp_path / "two", tmp_path / "three"
    two.mkdir()
    three.mkdir()
    assert run(mpiexec, 2, SCRIPTS / "equivalence.py", two).returncode == 0
    result = run(mpiexec, 3, SCRIPTS / "equivalence.py", three, two)
    assert result.returncode == 0, result.stderr[-3000:]
    check_against_reference(three, 3)
    # and a single-process optimizer resumes from the gathered ZeRO checkpoint
    name, options = CASES[3]
    fp, opt = make_optimizer(name, options)
    with np.load(two / "half_3_1.npz") as saved:
        fp.data[:] = saved["params"]
        hyperparameters = json.loads(str(saved["sd.hyperparameters"]))
        assert not hyperparameters["partial"]  # every group, whichever rank saved it
        assert sorted(g["params"] for g in hyperparameters["groups"]) == ["bias", "default"]
        opt.load_state_dict({k[3:]: saved[k] for k in saved.files if k.startswith("sd.")})
    for step in range(STEPS // 2, STEPS):
        x, y = global_batch(step)
        r = x @ fp.data[:-1] + fp.data[-1] - y
        fp.grad[:-1] = x.T @ r / len(y)
        fp.grad[-1] = r.mean()
        opt.step()
    np.testing.assert_allclose(fp.data, reference(3)[0], rtol=1e-12, atol=1e-13)


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
        for zero in (0, 1):
            assert "Invalid learning rate from schedule at step 6: nan" in str(
                saved[f"schedule_error_{zero}"]
            )
