"""Small helpers shared by the state and checkpoint tests."""

import io

import numpy as np


def words(array):
    """The raw bits of an array, for bit-for-bit comparisons (NaN included)."""
    return np.asarray(array).tobytes()


def snapshot(p, opt):
    return words(p), {k: words(v) for k, v in opt.state.items() if k != "step"}, opt.step_count


def through_npz(sd):
    """``sd`` after np.savez / np.load (0-d arrays for numbers and text), without pickle."""
    file = io.BytesIO()
    np.savez(file, **sd)
    file.seek(0)
    with np.load(file, allow_pickle=False) as saved:
        return {k: saved[k] for k in saved.files}
