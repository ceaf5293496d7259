"""``import fastopt`` plus the first Adam step in a fresh interpreter."""

import os
import shutil
import tempfile

CODE = """
import numpy as np
import fastopt
p = np.zeros(1000, np.float32)
fastopt.Adam(p).step(np.ones(1000, np.float32))
"""


class FirstStep:
    timeout = 300

    def setup_cache(self):
        return None

    def timeraw_import_and_first_step_warm_cache(self):
        # fastopt's own cache next to its sources, filled by the setup of other benchmarks
        return CODE

    def timeraw_import_and_first_step_cold_cache(self):
        folder = tempfile.mkdtemp(prefix="fastopt-cold-")
        os.environ["NUMBA_CACHE_DIR"] = folder  # inherited by the timed interpreter
        self._cold = folder
        return CODE

    def teardown(self):
        folder = getattr(self, "_cold", None)
        if folder:
            os.environ.pop("NUMBA_CACHE_DIR", None)
            shutil.rmtree(folder, ignore_errors=True)
