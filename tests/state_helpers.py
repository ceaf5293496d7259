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


def noisy_quadratic(name, options, seed, precision, size=8192, steps=80, record=(),
                    outlier=0.25):  # fmt: skip
    """``(full optimizer, compact optimizer, p0, {step: errors})`` after ``steps`` updates
    of a noisy quadratic with per-coordinate curvature (0.1 to 10) and noise (the same
    gradients for both; float32), with :func:`stream_errors` after each step in ``record``.
    """
    import fastopt

    rng = np.random.default_rng(seed)
    h = np.exp(rng.uniform(np.log(0.1), np.log(10), size))
    c = rng.standard_normal(size)
    sigma = 0.5 * np.exp(rng.uniform(-2, 2, size))
    p0 = rng.standard_normal(size).astype(np.float32)
    full = getattr(fastopt, name)(p0.copy(), **options)
    compact = getattr(fastopt, name)(p0.copy(), state_precision=precision, **options)
    recorded = {}
    for t in range(1, steps + 1):
        g = (h * (full.param - c) + sigma * rng.standard_normal(size)).astype(np.float32)
        full.step(g)
        compact.step(g)
        if t in record:
            recorded[t] = stream_errors(full, compact, p0, outlier)
    return full, compact, p0, recorded


def stream_errors(full, compact, p0, outlier):
    """Per state buffer ``(mean abs error / mean magnitude, mean relative error, share of
    elements off by more than ``outlier`` relative)`` of the compact state against the
    full one, and ``"param"``: the parameters' drift over the distance they moved.
    """
    errors = {}
    for key in full.state.buffers:
        x = full.state[key].astype(np.float64)
        err = np.abs(compact.state.decoded(key).astype(np.float64) - x)
        scale = np.abs(x).mean()
        rel = err / (np.abs(x) + 1e-2 * scale)
        errors[key] = (err.mean() / scale, rel.mean(), (rel > outlier).mean())
    drift = np.abs(compact.param.astype(np.float64) - full.param).mean()
    errors["param"] = drift / np.abs(full.param.astype(np.float64) - p0).mean()
    return errors


def assert_within(errors, bounds, rounded_above):
    """``errors`` (from :func:`stream_errors`) has exactly the buffers of ``bounds`` and
    stays within them: ``(nmae, mrel, outliers)`` per buffer, a number for ``"param"``;
    every buffer's nmae is above ``rounded_above`` (the state is rounded, not stored in
    full precision).
    """
    assert set(errors) == set(bounds)
    for key, bound in bounds.items():
        if key == "param":
            assert errors[key] <= bound, (key, errors[key])
            continue
        nmae, mrel, outliers = errors[key]
        assert nmae <= bound[0], (key, "mean absolute error", nmae)
        assert mrel <= bound[1], (key, "mean relative error", mrel)
        assert outliers <= bound[2], (key, "outliers", outliers)
        assert nmae > rounded_above
