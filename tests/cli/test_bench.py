"""The benchmark command and the asv suite run (speed itself is measured in bench/, not here)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bench_command_prints_a_table_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    text = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastopt",
            "bench",
            "--sizes",
            "1000",
            "20000",
            "--optimizers",
            "adam",
            "rmsprop",
            "--rounds",
            "3",
            "--threads",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout
    lines = text.splitlines()
    assert lines[0].startswith("fastopt bench: cpu=") and "threads=1" in lines[0]
    for key in ("cpus=", "threading_layer=", "stream_gbps="):
        assert key in lines[0]
    assert len([line for line in lines if line.startswith(("adam ", "rmsprop "))]) == 4
    data = json.loads(out.read_text())
    header = data["header"]
    assert header["threads"] == 1 and header["stream_gbps"] > 0
    assert header["threading_layer"] in ("omp", "tbb", "workqueue") and header["cpu"]
    rows = {(r["optimizer"], r["size"]): r for r in data["rows"]}
    assert set(rows) == {("adam", 1000), ("adam", 20000), ("rmsprop", 1000), ("rmsprop", 20000)}
    for row in rows.values():
        assert row["median_s"]["fastopt"] > 0 and row["gbps"] > 0
        assert {"fastopt", "stream", "numpy"} <= set(row["median_s"])
    assert "speedup_vs_torch_fused" not in rows[("rmsprop", 1000)]


@pytest.mark.parametrize("precision, state_bytes", [("bfloat16", 2), ("8bit", 1)])
def test_bench_precision_option_times_compact_state_against_full(tmp_path, precision, state_bytes):
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "fastopt", "bench", "--sizes", "8192", "--optimizers",
               "adam", "--rounds", "2", "--threads", "1", "--no-numpy", "--no-torch",
               "--precision", precision, "--json", str(out)]  # fmt: skip
    text = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    header = next(line for line in text.stdout.splitlines() if line.startswith("optimizer"))
    assert header.split()[2] == "state" and header.endswith("x full")
    (row,) = json.loads(out.read_text())["rows"]
    assert row["state_precision"] == precision
    assert {"fastopt", "fastopt_full", "stream"} <= set(row["median_s"])
    assert row["speedup_vs_fastopt_full"] > 0
    # params and gradient (3 float32 reads and writes) plus 2 states read and written
    scales = 2 * 2 * (8192 // 256) * 4 if precision == "8bit" else 0
    assert row["bytes_per_step"] == 3 * 4 * 8192 + 2 * 2 * state_bytes * 8192 + scales


def test_bench_command_rejects_unknown_optimizers():
    result = subprocess.run(
        [sys.executable, "-m", "fastopt", "bench", "--optimizers", "lion"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("python -m fastopt bench: error: argument --optimizers: ")
    assert "invalid choice: 'lion'" in result.stderr and "'adamw'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not result.stdout


def test_every_asv_benchmark_runs(tmp_path):
    asv = shutil.which("asv", path=os.path.dirname(sys.executable)) or shutil.which("asv")
    if asv is None:
        if os.environ.get("CI"):
            pytest.fail("asv is required in CI: pip install -e '.[test]'")
        pytest.skip("asv not installed")
    env = dict(os.environ, HOME=str(tmp_path), FASTOPT_BENCH_SMOKE="1")
    subprocess.run(
        [asv, "machine", "--yes"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=120
    )
    result = subprocess.run(
        [asv, "run", "--quick", "--python=same", "--show-stderr"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    finished = [
        line
        for line in result.stdout.splitlines()
        if line.startswith("[") and (" ok" in line or "failed" in line or "±" in line)
    ]
    assert not [line for line in finished if "failed" in line]
    assert len(finished) >= 13, result.stdout[-3000:]


def _code_comparison():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "code_comparison", ROOT / "bench" / "code_comparison.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_code_comparison_rounds_as_each_library_stores():
    """bench/code_comparison.py: its bitsandbytes maps have the dynamic map's shape (256
    sorted values in [-1, 1] with 0 and 1, 7 decades), its bitsandbytes rounding gives
    back every map entry times absmax exactly and the nearer entry between two, and its
    fastopt column is what an 8-bit fastopt optimizer stores.
    """
    import numpy as np

    import fastopt

    cc = _code_comparison()
    for signed, table in ((True, cc.BNB_SIGNED), (False, cc.BNB_UNSIGNED)):
        assert table.shape == (256,) and np.all(np.diff(table) >= 0)
        assert table[-1] == 1 and 0 in table
        assert -1 < table[0] < -0.99 if signed else table[0] == 0
        nonzero = np.abs(table[table != 0])
        assert 1e-7 < nonzero.min() < 1e-6
        assert cc._checksum(table) == cc.BNB_CHECKSUMS[signed]
        entries = np.unique(table[table >= 0] if not signed else table)
        block = np.resize(entries, 256).astype(np.float32)
        block[0] = 1.0  # absmax 1: every entry stands for itself
        assert np.array_equal(cc.bnb_round(block * 4, signed), block * 4)
        upper = entries[-3:]
        between = (0.3 * upper[:-1] + 0.7 * upper[1:]).astype(np.float32)  # nearer the upper
        values = np.zeros(256, np.float32)
        values[0], values[1:3] = 1.0, between
        assert np.array_equal(cc.bnb_round(values, signed)[1:3], upper[1:])
    rng = np.random.default_rng(0)
    g = rng.standard_normal(8192).astype(np.float32)
    opt = fastopt.SGD(np.zeros(8192, np.float32), lr=0.1, momentum=0.9, state_precision="8bit")
    opt.step(g)  # the first momentum step stores the gradient itself
    stored = opt.state.decoded("momentum_buffer")
    assert np.array_equal(cc.fastopt_round(g, True), stored)
    assert not np.array_equal(stored, g)  # rounded


def _bench(*args):
    from fastopt.cli.main import main

    return main(["bench", "--sizes", "1000", "--rounds", "1", "--no-numpy", "--no-torch", *args],
                prog="python -m fastopt")  # fmt: skip


@pytest.mark.parametrize("precision", ["bfloat16", "8bit"])
def test_every_default_optimizer_runs_with_compact_state(tmp_path, capsys, precision):
    """Plain SGD keeps no state (its stream kernel moves the parameters alone); an
    optimizer that cannot keep its state in this precision is skipped with a note.
    """
    from fastopt.cli import bench

    out = tmp_path / "bench.json"
    assert _bench("--precision", precision, "--json", str(out)) == 0
    data = json.loads(out.read_text())
    refused = bench.unsupported(bench.CONFIGS, "float32", precision)
    assert set(data["skipped"]) == set(refused)
    assert [row["optimizer"] for row in data["rows"]] == [
        n for n in bench.CONFIGS if n not in refused
    ]
    sgd = data["rows"][0]
    assert sgd["optimizer"] == "sgd" and sgd["bytes_per_step"] == 3 * 4 * 1000
    assert sgd["median_s"]["stream"] > 0 and sgd["median_s"]["fastopt"] > 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("skipped")]
    assert len(notes) == len(refused)
    for name, note in zip(refused, notes):
        assert note.startswith(f"skipped {name}: it does not support --precision {precision}")


def test_an_optimizer_named_without_support_for_the_precision_is_refused_before_any_work(
    tmp_path, capsys, monkeypatch
):
    from fastopt.cli import bench

    assert "rmsprop_centered" in bench.unsupported(["adam", "rmsprop_centered"], "float32", "8bit")

    def no_work(*args, **kwargs):
        raise AssertionError("timed something")

    monkeypatch.setattr(bench, "measure", no_work)
    monkeypatch.setattr(bench, "machine_info", no_work)
    out = tmp_path / "bench.json"
    status = _bench("--optimizers", "adam", "rmsprop_centered", "--precision", "8bit",
                    "--json", str(out))  # fmt: skip
    captured = capsys.readouterr()
    assert status == 2 and not captured.out and not out.exists()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith(
        "python -m fastopt bench: error: --optimizers rmsprop_centered with --precision 8bit: "
        "not supported (centered=True"
    )
