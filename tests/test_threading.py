"""fastopt must not slow down a user's torch, whichever of the two is imported first."""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    order = sys.argv[1]
    if order == "torch-first":
        import torch
    import fastopt
    p = np.zeros(100_000, np.float32)
    fastopt.Adam(p).step(np.ones_like(p))        # starts numba's OpenMP pool
    if order == "fastopt-first":
        import torch
    torch.set_num_threads(2)
    torch.sqrt(torch.ones(1000))                 # runs torch's OpenMP code
    maps = open("/proc/self/maps").read()
    gomp = sorted({line.split()[-1] for line in maps.splitlines() if "libgomp" in line})
    print("\\n".join(gomp))
""")


@pytest.mark.torch
@pytest.mark.parametrize("order", ["fastopt-first", "torch-first"])
def test_torch_keeps_its_own_openmp_runtime(order, torch, tmp_path):
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    script = tmp_path / "order.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "FASTOPT_NO_OPENMP_PRELOAD"}
    out = subprocess.run(
        [sys.executable, str(script), order],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    ).stdout.split()
    # torch's bundled libgomp must be loaded: if numba's system libgomp had come first,
    # libtorch would have bound to that one instead and never loaded its own.
    assert any(path.startswith(torch_lib) for path in out), out
