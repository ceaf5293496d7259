"""The learning-rate range test."""

import json
import warnings

import numpy as np
import pytest

import fastopt

from problems import quadratic


def test_range_test_finds_the_stability_edge_and_restores(tmp_path):
    x0, loss_grad = quadratic(50, 4.0, np.float64)
    x = x0.copy()
    result = fastopt.lr_range_test(loss_grad, x, min_lr=1e-5, max_lr=100, iterations=200)
    assert x.tobytes() == x0.tobytes()
    assert result.stopped_at is not None and result.lrs[result.stopped_at] > 2 / 4.0
    assert 1e-3 < result.suggested_lr < 2 / 4.0
    assert np.isnan(result.costs[result.stopped_at + 1 :]).all()
    np.testing.assert_allclose(result.lrs[[0, -1]], [1e-5, 100])
    assert "suggestion lr=" in result.reason and "fastopt.sweep" in result.reason
    assert json.loads(json.dumps(result.to_dict()))["stopped_at"] == result.stopped_at
    assert "range test: SGD" in result.table()
    pytest.importorskip("matplotlib")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        result.plot(tmp_path / "range.png")
    assert (tmp_path / "range.png").read_bytes()[:4] == b"\x89PNG"
