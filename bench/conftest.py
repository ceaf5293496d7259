"""pytest configuration for the pytest-benchmark files in bench/ (the asv modules beside them
are not collected).

``python -m pytest bench --benchmark-only`` times them. Run as part of the test suite (the
README's ``python -m pytest``), each benchmark runs once, untimed, on the smoke sizes
(``FASTOPT_BENCH_SMOKE``): so that none can rot, at almost no cost.
"""

import os
import pathlib

import pytest

HERE = pathlib.Path(__file__).parent
collect_ignore = [
    path.name for path in HERE.glob("*.py") if not path.name.startswith(("test_", "conftest"))
]


def pytest_configure(config):
    timing = config.getoption("benchmark_only", False) or config.getoption(
        "benchmark_enable", False
    )
    if not timing:
        config.option.benchmark_disable = True
        os.environ.setdefault("FASTOPT_BENCH_SMOKE", "1")


def pytest_benchmark_update_machine_info(config, machine_info):
    from fastopt.cli.bench import import_torch
    from fastopt.cli.bench import machine_info as fastopt_machine

    machine_info["fastopt"] = fastopt_machine(import_torch())


@pytest.fixture(scope="session")
def torch_module():
    """torch, or a skip; in CI a missing torch fails instead (it is in the test extras)."""
    try:
        import torch
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("torch is required for the benchmarks in CI: pip install -e '.[test]'")
        pytest.skip("torch not installed (pip install -e '.[test]')")
    return torch
