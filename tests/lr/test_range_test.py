"""The learning-rate range test."""

import json
import math
import re
import warnings

import numpy as np
import pytest

import fastopt
from fastopt._plotting import run_styles
from fastopt.lr.range_test import RangeTestFailed, RangeTestResult, longest_valley

from problems import quadratic


@pytest.fixture
def plot_path(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield tmp_path / "plot.png"
    plt.close("all")


def least_squares(seed=0, n=256, dim=8):
    """A noisy mini-batch problem; the cost returned is on the full set, so every run
    starts from the same cost while the gradients follow the batches.
    """
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, dim))
    b = a @ rng.standard_normal(dim) + 0.3 * rng.standard_normal(n)
    batches = [rng.choice(n, 16) for _ in range(200)]

    def loss_grad(x, grad, batch):
        grad[:] = a[batch].T @ (a[batch] @ x - b[batch]) / len(batch)
        return float(0.5 * np.mean((a @ x - b) ** 2))

    return loss_grad, batches


def test_range_test_finds_the_stability_edge_and_restores(tmp_path):
    x0, loss_grad = quadratic(50, 4.0, np.float64)
    x = x0.copy()
    result = fastopt.lr_range_test(loss_grad, x, min_lr=1e-5, max_lr=100, iterations=200)
    assert x.tobytes() == x0.tobytes()
    assert result.stopped_at is not None and result.lrs[result.stopped_at] > 2 / 4.0
    assert result.stopped_by == "divergence"
    assert 1e-3 < result.suggested_lr < 2 / 4.0
    assert np.isnan(result.costs[result.stopped_at + 1 :]).all()
    np.testing.assert_allclose(result.lrs[[0, -1]], [1e-5, 100])
    assert "suggestion lr=" in result.reason and "fastopt.sweep" in result.reason
    start, end = result.valley
    assert 0 <= start < end < result.stopped_at
    assert result.lrs[start] < result.valley_lr < result.lrs[end]
    assert f"longest valley at lr={result.valley_lr:.3g}" in result.reason
    data = json.loads(json.dumps(result.to_dict()))
    assert data["stopped_at"] == result.stopped_at and data["valley_lr"] == result.valley_lr
    assert data["repeats"] == 1 and "runs" not in data
    assert data["spread"]["valley_lr"] == [result.valley_lr] * 3
    text = result.table()
    assert "range test: SGD" in text
    assert re.search(rf"valley_lr +longest valley +{result.valley_lr:.3g}\n", text)
    pytest.importorskip("matplotlib")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        result.plot(tmp_path / "range.png")
    assert (tmp_path / "range.png").read_bytes()[:4] == b"\x89PNG"


def test_longest_valley_is_the_longest_decreasing_subsequence():
    assert longest_valley([3.0, 1.0, 2.0, 0.0]) == (0, 3)
    assert longest_valley([1.0, 2.0, 2.0, 3.0]) is None
    # a rise in the middle is skipped; the longer chain wins over an earlier, shorter one
    assert longest_valley([5.0, 4.0, 9.0, 8.0, 7.0, 6.0, 3.0, 2.0, 4.0]) == (2, 7)


def test_valley_suggestion_on_a_known_curve_ignores_a_spike():
    # flat at 5 up to update 10, falling 0.2 per update to 2 at update 25 (a spike to 6
    # at update 15), then rising: the valley is updates 10..25, two thirds down it is 20
    lrs = np.geomspace(1e-4, 1.0, 31)
    curve = np.full(31, 5.0)
    curve[10:26] = 5.0 - 0.2 * np.arange(16)
    curve[15] = 6.0
    curve[26:] = 2.0 + 0.5 * np.arange(1, 6)
    result = RangeTestResult(lrs, curve.copy(), curve, None, "test")
    assert result.valley == (10, 25)
    assert result.valley_lr == lrs[20]
    assert result.steepest_lr in (lrs[15], lrs[16])  # the spike fools the steepest point
    assert result.minimum_lr == lrs[25] and result.suggested_lr == lrs[25] / 10
    no_fall = RangeTestResult(lrs, lrs.copy(), lrs.copy(), None, "test")
    assert no_fall.valley is None and no_fall.valley_lr is None
    assert no_fall.spread["valley_lr"] is None and "no suggestion" in no_fall.reason


def test_repeats_restore_between_runs_and_report_the_spread():
    loss_grad, batches = least_squares()
    order = np.random.default_rng(1)

    def shuffled():
        return (batches[i] for i in order.permutation(len(batches)))

    x = np.zeros(8)
    result = fastopt.lr_range_test(
        loss_grad, x, min_lr=1e-4, max_lr=10, iterations=120, batches=shuffled, repeats=3
    )
    assert not x.any()
    assert len(result.runs) == 3
    # same start (restored bit for bit), different batch orders after it
    assert len({run.costs[0] for run in result.runs}) == 1
    assert not np.array_equal(result.runs[0].costs[:50], result.runs[1].costs[:50])
    np.testing.assert_array_equal(result.costs, result.runs[0].costs)
    for key in ("suggested_lr", "steepest_lr", "valley_lr", "minimum_lr"):
        values = sorted(getattr(run, key) for run in result.runs)
        low, median, high = result.spread[key]
        assert (low, median, high) == (values[0], values[1], values[2])
        assert getattr(result, key) == median
    data = json.loads(json.dumps(result.to_dict()))
    assert data["repeats"] == 3 and len(data["runs"]) == 3
    assert data["spread"]["valley_lr"] == list(result.spread["valley_lr"])
    text = result.table()
    assert "median" in text and "3/3" in text and "3 runs, medians" in result.reason


def test_repeats_of_a_deterministic_problem_are_identical():
    x0, loss_grad = quadratic(10, 4.0, np.float64)
    result = fastopt.lr_range_test(loss_grad, x0.copy(), iterations=60, repeats=2)
    one, two = result.runs
    np.testing.assert_array_equal(one.costs, two.costs)
    assert result.spread["valley_lr"][0] == result.spread["valley_lr"][2] == result.valley_lr
    # two runs: the median of the logs, i.e. the geometric mean of the middle two
    lrs = [1e-3, 1e-1]
    runs = []
    for lr in lrs:
        run = RangeTestResult(one.lrs, one.costs, one.smoothed, one.stopped_at, "SGD")
        run.valley_lr = lr
        runs.append(run)
    combined = RangeTestResult(one.lrs, one.costs, one.smoothed, None, "SGD", runs=runs)
    assert combined.valley_lr == pytest.approx(1e-2)


@pytest.mark.parametrize("repeats", [0, -1, 1.5, True, "2"])
def test_repeats_is_checked(repeats):
    x0, loss_grad = quadratic(3, 1.0, np.float64)
    with pytest.raises(
        ValueError, match=rf"Invalid repeats: {repeats!r} \(expected an integer >= 1\)"
    ):
        fastopt.lr_range_test(loss_grad, x0, repeats=repeats)


def failing_after(calls, loss_grad):
    count = [0]

    def failing(x, grad):
        count[0] += 1
        if count[0] > calls:
            raise FloatingPointError("boom")
        return loss_grad(x, grad)

    return failing


def test_a_failure_names_the_update_and_rate_and_carries_the_finished_part():
    x0, loss_grad = quadratic(20, 4.0, np.float64)
    x = x0.copy()
    with pytest.raises(RangeTestFailed, match="failed at update 36 ") as info:
        fastopt.lr_range_test(failing_after(36, loss_grad), x, min_lr=1e-5, iterations=80)
    error = info.value
    assert x.tobytes() == x0.tobytes()
    assert isinstance(error, RuntimeError) and isinstance(error.__cause__, FloatingPointError)
    assert error.update == 36 and error.repeat == 0 and error.completed == ()
    partial = error.partial
    assert error.lr == partial.lrs[36] and f"lr={error.lr:.3g}" in str(error)
    assert "FloatingPointError: boom" in str(error)
    assert partial.stopped_at == 36 and partial.stopped_by == "error"
    assert np.isfinite(partial.costs[:36]).all() and np.isnan(partial.costs[36:]).all()
    assert partial.valley_lr is not None and partial.valley[1] < 36
    assert "loss_grad raised an error" in partial.reason
    assert json.loads(json.dumps(partial.to_dict()))["stopped_by"] == "error"


def test_a_failure_in_a_later_repeat_and_at_the_first_update():
    x0, loss_grad = quadratic(20, 4.0, np.float64)
    x = x0.copy()
    with pytest.raises(RangeTestFailed, match="update 5 of run 2 of 3") as info:
        fastopt.lr_range_test(failing_after(30 + 5, loss_grad), x, iterations=30, repeats=3)
    assert x.tobytes() == x0.tobytes()
    assert info.value.repeat == 1 and len(info.value.completed) == 1
    assert np.isfinite(info.value.completed[0].costs[0])
    with pytest.raises(RangeTestFailed, match="failed at update 0 ") as info:
        fastopt.lr_range_test(failing_after(0, loss_grad), x, iterations=30)
    assert x.tobytes() == x0.tobytes()
    partial = info.value.partial
    assert partial.suggested_lr is None and partial.valley_lr is None
    assert "range test" in partial.table()


def test_plot_clips_the_spike_on_a_log_axis(plot_path):
    x0, loss_grad = quadratic(50, 4.0, np.float64)
    result = fastopt.lr_range_test(loss_grad, x0, min_lr=1e-5, max_lr=100, iterations=200)
    raw = result.costs[np.isfinite(result.costs)]
    assert raw.max() > 100 * raw[0]  # the spike the plot must not scale to
    ax = result.plot(plot_path)
    low, high = ax.get_ylim()
    assert ax.get_yscale() == "log" and ax.get_xscale() == "log"
    # the raw cost runs ahead of its lagging average: the floor is the lower of the two
    floor = min(np.nanmin(result.smoothed), np.percentile(raw, 5))
    assert floor < np.nanmin(result.smoothed) / 10
    assert floor / 2 < low < floor
    assert 3 * raw[0] < high < raw.max() / 10
    assert np.log(high / (3 * raw[0])) < 0.06 * np.log(high / low)  # 3x start, 5% margin
    labels = [line.get_label() for line in ax.get_legend().get_lines()]
    assert f"longest valley: {result.valley_lr:.2g}" in [
        t.get_text() for t in ax.get_legend().get_texts()
    ]
    assert len(labels) >= 6


def test_plot_uses_a_linear_axis_for_negative_costs(plot_path):
    x0, loss_grad = quadratic(50, 4.0, np.float64)
    shifted = lambda x, grad: loss_grad(x, grad) - 30.0  # noqa: E731
    result = fastopt.lr_range_test(shifted, x0, min_lr=1e-5, max_lr=100, iterations=200)
    ax = result.plot(plot_path)
    low, high = ax.get_ylim()
    start = result.costs[0]
    floor = np.nanmin(result.smoothed[: result.stopped_at])
    assert ax.get_yscale() == "linear" and floor < 0 < start
    drop = start - floor
    assert floor - 0.2 * drop < low < floor
    assert start < high < start + 1.2 * drop < np.nanmax(result.costs)


def test_plot_of_repeats_draws_every_run(plot_path):
    loss_grad, batches = least_squares()
    order = np.random.default_rng(2)
    result = fastopt.lr_range_test(
        loss_grad,
        np.zeros(8),
        min_lr=1e-4,
        max_lr=10,
        iterations=120,
        batches=lambda: (batches[i] for i in order.permutation(len(batches))),
        repeats=4,
    )
    ax = result.plot(plot_path)
    runs = [line for line in ax.get_lines() if line.get_label().startswith("run ")]
    assert len(runs) == 4 and len({line.get_color() for line in runs}) == 4
    assert ax.get_yscale() == "log"
    assert "(4 runs)" in ax.get_title()


def test_run_styles_keep_many_curves_apart():
    styles = run_styles(40, points=50)
    keys = {(s["color"], s["linestyle"], s["marker"]) for s in styles}
    assert len(keys) == 40
    assert len({s["color"] for s in styles[:10]}) == 10
    assert {s["markevery"][1] for s in styles} == {8}
    assert len({s["markevery"][0] for s in styles[:8]}) == 8


def test_sweep_plot_keeps_12_runs_apart(plot_path):
    x0, loss_grad = quadratic(10, 4.0, np.float64)
    result = fastopt.sweep(
        loss_grad, x0, lrs=np.geomspace(1e-3, 3.0, 12), iterations=20, progress=False
    )
    ax = result.plot(plot_path)
    runs = [line for line in ax.get_lines() if line.get_label().startswith("lr=")]
    assert len(runs) == 12
    assert len({(ln.get_color(), ln.get_linestyle(), ln.get_marker()) for ln in runs}) == 12
    assert len({line.get_color() for line in runs}) == 10
    widths = [line.get_linewidth() for line in runs]
    assert widths.index(max(widths)) == result.best_index and widths.count(max(widths)) == 1
    crosses = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert len(crosses) == result.verdicts.count("diverged") > 0
    assert plot_path.read_bytes()[:4] == b"\x89PNG"


def test_steepest_descent_skips_the_warm_up_and_what_follows_the_minimum():
    lrs = np.logspace(-5, 1, 100)
    curve = np.full(100, 5.0)
    curve[2:4] = [3.0, 5.0]  # an early dip while the average has seen few costs
    curve[40:70] = np.linspace(5.0, 1.0, 30)  # the real descent, steepest at its start
    curve[70:] = np.linspace(1.0, 0.5, 30)
    curve[99] = 0.4
    result = RangeTestResult(lrs, curve.copy(), curve, None, "test")
    assert lrs[40] <= result.steepest_lr <= lrs[70]
    after_minimum = curve.copy()
    after_minimum[70] = 0.2  # the minimum
    after_minimum[71:85] = np.linspace(0.5, 3.0, 14)  # then a rise and a steep fall
    after_minimum[85:] = np.linspace(3.0, 0.3, 15)
    result = RangeTestResult(lrs, after_minimum.copy(), after_minimum, None, "test")
    assert lrs[40] <= result.steepest_lr <= lrs[70]


def test_too_few_costs_for_a_suggestion_say_so_and_what_to_change():
    x0, loss_grad = quadratic(2, 1.0, np.float64)
    short = fastopt.lr_range_test(loss_grad, x0, iterations=2)
    assert short.suggested_lr is None and short.stopped_at is None
    assert "too few updates (2 smoothed costs; the suggestions need 3): raise iterations" in (
        short.reason
    )
    assert "never fell below its start" not in short.reason
    early = fastopt.lr_range_test(loss_grad, x0, min_lr=3.0, max_lr=1e3, iterations=20)
    assert early.stopped_at is not None and early.stopped_at < 3
    assert "too few updates before the stop" in early.reason and "lower min_lr" in early.reason

    def nan_cost(x, grad):
        grad[:] = x
        return float("nan")

    start = fastopt.lr_range_test(nan_cost, x0, iterations=10)
    assert "no suggestion: the starting cost is nan, not a finite number" in start.reason
    assert "the smoothed cost is nan" in start.reason


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"min_lr": 1e-320}, ValueError, r"Invalid min_lr/max_lr: 1e-320, 10\.0 .*max_lr / min_lr"),
        ({"min_lr": 1.0, "max_lr": 0.5}, ValueError, r"Invalid min_lr/max_lr: 1\.0, 0\.5"),
        ({"max_lr": float("inf")}, ValueError, r"Invalid max_lr: inf \(expected a finite"),
        ({"min_lr": "1e-3"}, TypeError, r"Invalid min_lr: '1e-3'"),
        ({"smoothing": "0.1"}, TypeError, r"Invalid smoothing: '0\.1'"),
    ],
)
def test_rates_and_smoothing_are_checked_by_name(kwargs, error, match):
    x0, loss_grad = quadratic(2, 1.0, np.float64)
    with pytest.raises(error, match=match):
        fastopt.lr_range_test(loss_grad, x0, **kwargs)


def test_an_optimizer_option_it_rejects_is_reported_as_building_the_optimizer():
    x0, loss_grad = quadratic(2, 1.0, np.float64)
    with pytest.raises(RangeTestFailed, match=r"failed building the optimizer \(lr=") as info:
        fastopt.lr_range_test(loss_grad, x0, iterations=5, momentum=-1)
    assert info.value.building and "update 0" not in str(info.value)


def test_batches_that_run_out_say_how_many_are_needed():
    x0, loss_grad = quadratic(2, 1.0, np.float64)
    with pytest.raises(RangeTestFailed) as info:
        fastopt.lr_range_test(
            lambda x, grad, batch: loss_grad(x, grad), x0, iterations=8,
            batches=lambda: iter(range(5)),
        )  # fmt: skip
    assert "batches ran out after 5: give at least 8 (one per update" in str(info.value.__cause__)


def test_to_dict_is_strict_json_with_an_infinite_cost():
    def overflowing(x, grad):
        grad[:] = -1.0
        return math.inf if x[0] > 1 else 1.0 - 0.1 * float(x[0])

    result = fastopt.lr_range_test(overflowing, np.zeros(1), min_lr=1e-3, max_lr=1.0,
                                   iterations=30)  # fmt: skip
    assert result.stopped_at is not None and np.isinf(result.costs[result.stopped_at])
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    np.testing.assert_array_equal(np.asarray(data["costs"], float), result.costs)


def test_a_plot_written_to_a_file_closes_its_figure(plot_path):
    import matplotlib.pyplot as plt

    x0, loss_grad = quadratic(2, 1.0, np.float64)
    result = fastopt.lr_range_test(loss_grad, x0, iterations=20)
    open_before = plt.get_fignums()
    for _ in range(3):
        ax = result.plot(plot_path)
    assert plt.get_fignums() == open_before and ax.get_lines()
