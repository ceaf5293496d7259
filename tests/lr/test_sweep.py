"""The learning-rate sweep: picks, verdicts, restores and its result."""

import json
import warnings

import numpy as np
import pytest

import fastopt
from fastopt.lr.sweep import DEFAULT_LRS, SweepFailed, classify

from problems import logistic_problem, quadratic


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dim", [1, 10, 257])
@pytest.mark.parametrize("top_curvature", [0.5, 1.0, 4.0, 25.0, 300.0])
def test_quadratic_stability_edge(top_curvature, dim, dtype):
    x0, loss_grad = quadratic(dim, top_curvature, dtype)
    x = x0.copy()
    result = fastopt.sweep(loss_grad, x, iterations=50, progress=False)
    assert x.tobytes() == x0.tobytes()
    stable = result.lrs < 2 / top_curvature
    for lr, verdict in zip(result.lrs, result.verdicts):
        if lr > 2 / top_curvature:
            assert verdict == "diverged", (lr, verdict)
    assert result.best_lr == result.lrs[stable].max()
    assert result.verdicts[result.best_index] == "good"
    assert result.costs.shape == (len(DEFAULT_LRS), 51)


@pytest.mark.parametrize(
    "optimizer, options, compare_with",
    [
        (fastopt.SGD, {}, ("good", "slow", "oscillating")),
        (fastopt.Adam, {}, ("good", "slow", "oscillating")),
        # with momentum, lr=3 ends lower but rises on 5 of 40 updates: never picked
        (fastopt.SGD, {"momentum": 0.9}, ("good", "slow")),
    ],
)
def test_logistic_regression_pick_reaches_the_lowest_cost(optimizer, options, compare_with):
    w0, loss_grad = logistic_problem()
    w = w0.copy()
    lrs = DEFAULT_LRS + (10.0, 30.0, 100.0)
    result = fastopt.sweep(loss_grad, w, optimizer=optimizer, lrs=lrs, iterations=40, **options)
    assert w.tobytes() == w0.tobytes()
    assert result.verdicts[-1] in ("diverged", "oscillating") and result.best_lr < 10
    finals = {
        lr: row[-1]
        for lr, row, v in zip(result.lrs, result.costs, result.verdicts)
        if v in compare_with
    }
    assert result.best_lr is not None
    best = finals[result.best_lr]
    assert all(best <= cost for cost in finals.values()), result.table()
    assert best < 0.5 * result.costs[0, 0]


def test_params_and_grad_buffer_restored_after_divergence_and_errors():
    fp = fastopt.FlatParams({"w": np.linspace(-1, 1, 30)})
    fp.grad[:] = 7.0
    before = fp.data.copy(), fp.grad.copy()
    calls = {"n": 0}

    def loss_grad(params, grad):
        calls["n"] += 1
        if calls["n"] == 80:
            raise RuntimeError("data loader broke")
        params.grads["w"][:] = 10 * params["w"]
        return 5 * float(np.sum(params["w"] ** 2))

    with pytest.raises(RuntimeError, match="data loader broke"):
        fastopt.sweep(loss_grad, fp, lrs=[0.01, 0.1, 0.3, 1.0], iterations=50)
    assert fp.data.tobytes() == before[0].tobytes()
    assert fp.grad.tobytes() == before[1].tobytes()
    calls["n"] = -(10**9)
    result = fastopt.sweep(loss_grad, fp, lrs=[0.01, 0.1, 0.3, 1.0], iterations=50)
    assert result.verdicts[-2:] == ["diverged", "diverged"]
    assert np.isnan(result.costs[-1, 5:]).all()
    assert fp.data.tobytes() == before[0].tobytes()
    assert fp.grad.tobytes() == before[1].tobytes()


@pytest.mark.parametrize(
    "costs, verdict",
    [
        ([3.0, 2.0, np.nan, np.nan], "diverged"),
        ([3.0, 2.0, np.inf, 1.0], "diverged"),
        ([3.0, 5.0, 13.0, 2.0], "diverged"),  # above 4x the start
        ([3.0, 2.0, 2.5, 3.1], "diverged"),  # ended above the start
        ([3.0, 2.0, 2.5, 1.5, 1.7, 1.2, 1.0], "oscillating"),  # 2 rises in 6 updates
        ([3.0, 2.99, 2.985, 2.98], "slow"),  # 0.7% decrease
        ([3.0] + [3.0 - 0.1 * k for k in range(1, 20)] + [1.2], "good"),  # 1 rise in 20
        ([3.0, 2.0, 1.0, 0.5], "good"),
        ([-1.0, -1.5, -2.0], "good"),  # negative costs work too
        ([-1.0, -0.5, 4.0], "diverged"),
    ],
)
def test_verdict_rules(costs, verdict):
    assert classify(costs) == verdict


def test_no_pick_and_gradient_check_when_the_gradient_is_wrong():
    x0, good_loss_grad = quadratic(8, 2.0, np.float64)

    def wrong_sign(x, grad):
        cost = good_loss_grad(x, grad)
        grad *= -1
        return cost

    x = x0.copy()
    result = fastopt.sweep(wrong_sign, x, lrs=[1e-4, 1e-3], iterations=10)
    assert result.best_lr is None and result.grad_check is not None
    assert not result.grad_check.ok
    assert "gradient check FAILED" in result.reason and "Even the smallest rate" in result.reason
    assert x.tobytes() == x0.tobytes()
    ok = fastopt.sweep(good_loss_grad, x, lrs=[1e-4, 1e-3], iterations=10)
    assert ok.grad_check is None and ok.best_lr == 1e-3


def test_mini_batch_sweep_replays_the_same_batches():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((40, 5))
    b = a @ np.arange(1.0, 6.0)
    batches = [rng.choice(40, 8, replace=False) for _ in range(31)]
    seen = []

    def loss_grad(x, grad, batch):
        seen.append(batch[0])
        r = a[batch] @ x - b[batch]
        grad[:] = a[batch].T @ r / len(batch)
        return float(0.5 * np.mean((a @ x - b) ** 2))

    result = fastopt.sweep(
        loss_grad,
        np.zeros(5),
        lrs=[0.01, 0.1],
        iterations=30,
        batches=batches,
        max_increase_share=0.3,
    )
    assert seen[:31] == seen[31:62] == [bt[0] for bt in batches]
    assert result.best_lr == 0.1
    with pytest.raises(TypeError, match="one-shot iterator cannot be replayed"):
        fastopt.sweep(loss_grad, np.zeros(5), batches=iter(batches))
    with pytest.raises(ValueError, match=r"Invalid batches: 31 batches for 40 iterations"):
        fastopt.sweep(loss_grad, np.zeros(5), lrs=[0.01], iterations=40, batches=batches)
    with pytest.raises(SweepFailed, match="lr=0.01, evaluating the cost after update 31") as e:
        fastopt.sweep(loss_grad, np.zeros(5), lrs=[0.01], iterations=40, batches=lambda: batches)
    assert "batches ran out" in str(e.value.__cause__)


def test_result_table_dict_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    x0, loss_grad = quadratic(10, 4.0, np.float64)
    result = fastopt.sweep(loss_grad, x0.copy(), iterations=20)
    text = result.table()
    assert "*        0.3" in text and "diverged (at update" in text and text.count("\n") == 12
    data = json.loads(json.dumps(result.to_dict()))
    assert data["best_lr"] == 0.3 and data["costs"][-1][-1] is None
    assert data["verdicts"] == result.verdicts
    path = tmp_path / "sweep.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        result.plot(path)
    content = path.read_bytes()
    assert content[:8] == b"\x89PNG\r\n\x1a\n" and len(content) > 10_000


def test_plot_without_matplotlib_names_the_extra(request):
    x0, loss_grad = quadratic(3, 1.0, np.float64)
    result = fastopt.sweep(loss_grad, x0, lrs=[0.1], iterations=3)
    request.getfixturevalue("no_matplotlib")
    with pytest.raises(ImportError, match=r'pip install "fastopt\[plot\]"'):
        result.plot()


def test_invalid_sweep_arguments():
    x0, loss_grad = quadratic(3, 1.0, np.float64)
    with pytest.raises(ValueError, match=r"Invalid lrs"):
        fastopt.sweep(loss_grad, x0, lrs=[0.1, -1])
    with pytest.raises(ValueError, match=r"Invalid iterations: 0"):
        fastopt.sweep(loss_grad, x0, iterations=0)
    with pytest.raises(ValueError, match=r"params must be a 1-D array"):
        fastopt.sweep(loss_grad, np.zeros((2, 2)))
    with pytest.raises(SweepFailed, match=r"loss_grad must return the cost as a number") as e:
        fastopt.sweep(lambda x, g: "low", x0, lrs=[0.1], iterations=2)
    assert isinstance(e.value.__cause__, TypeError)


# -- verdicts that never mislead ---------------------------------------------------------
def mlp_problem(seed=0):
    """A small tanh network on random data: (params, loss_grad) with a correct gradient."""
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((64, 8)), rng.standard_normal((64, 1))
    fp = fastopt.FlatParams(
        {"W": rng.standard_normal((8, 6)) * 0.5, "b": np.zeros(6), "v": rng.standard_normal((6, 1))}
    )

    def loss_grad(p, g):
        h = np.tanh(x @ p.params["W"] + p.params["b"])
        r = h @ p.params["v"] - y
        dh = (r @ p.params["v"].T) * (1 - h * h) / len(x)
        p.grads["W"][:] = x.T @ dh
        p.grads["b"][:] = dh.sum(0)
        p.grads["v"][:] = h.T @ r / len(x)
        return float(0.5 * np.mean(r * r))

    return fp, loss_grad


def test_a_gradient_never_written_gives_flat_runs_no_pick_and_the_causes():
    fp, loss_grad = mlp_problem()
    before = fp.data.copy()
    result = fastopt.sweep(lambda p, g: _cost_only(loss_grad, p), fp, iterations=10)
    assert result.verdicts == ["flat"] * len(DEFAULT_LRS)
    assert result.best_lr is None and result.best_index is None
    assert "no run changed the cost beyond rounding" in result.reason
    assert "does not write the gradient" in result.reason and "not connected" in result.reason
    assert result.grad_zero is True and "left grad at zero" in result.reason
    assert result.grad_check is not None and not result.grad_check.ok
    assert result.grad_check.message in result.reason
    assert fp.data.tobytes() == before.tobytes()
    assert "pick: no run" in result.table()


def _cost_only(loss_grad, p):
    """The cost of ``loss_grad`` with its gradient thrown away (a gradient never written)."""
    saved = p.grad.copy()
    cost = loss_grad(p, p.grad)
    p.grad[:] = saved
    return cost


def test_a_constant_zero_cost_is_flat_not_good():
    x = np.ones(4)
    result = fastopt.sweep(lambda p, g: 0.0, x, lrs=[0.01, 0.1], iterations=5)
    assert result.verdicts == ["flat", "flat"] and result.best_lr is None
    assert classify([0.0] * 6) == "flat"


def test_a_gradient_not_connected_to_the_cost_is_told_apart_from_a_zero_one():
    fp, loss_grad = mlp_problem()

    def wrong(p, g):
        loss_grad(p, g)  # a nonzero gradient is written ...
        return 1.5  # ... but the cost returned does not depend on the parameters

    result = fastopt.sweep(wrong, fp, lrs=[1e-3, 1e-2], iterations=5)
    assert result.verdicts == ["flat", "flat"] and result.best_lr is None
    assert result.grad_zero is False and "probably not the gradient" in result.reason


def test_flat_runs_are_never_picked_beside_moving_ones():
    costs = {0.1: [1.0, 0.5, 0.25], 0.01: [1.0, 1.0, 1.0]}
    assert classify(costs[0.01]) == "flat" and classify(costs[0.1]) == "good"
    assert classify([1.0, 1.0 - 1e-9, 1.0]) == "flat"  # rounding is no change
    assert classify([1.0, 1.0 - 1e-3, 1.0 - 2e-3]) == "slow"
    x0, loss_grad = quadratic(3, 1.0, np.float64)
    result = fastopt.sweep(loss_grad, x0, lrs=[0.0, 0.1], iterations=10)
    assert result.verdicts[0] == "flat" and result.best_lr == 0.1
    assert "did not move with lr 0" in result.reason


@pytest.mark.parametrize(
    "rule, value, match",
    [
        ("diverge_factor", 1.0, r"Invalid diverge_factor: 1.0 \(expected a finite number > 1\)"),
        ("diverge_factor", float("inf"), "Invalid diverge_factor: inf"),
        ("max_increase_share", 1.0, r"expected 0 <= max_increase_share < 1"),
        ("max_increase_share", -0.1, r"Invalid max_increase_share: -0.1"),
        ("min_decrease", float("nan"), r"Invalid min_decrease: nan"),
        ("min_decrease", 1.5, r"expected 0 <= min_decrease < 1"),
        ("increase_rtol", -1e-6, r"Invalid increase_rtol: -1e-06"),
    ],
)
def test_rule_parameters_are_validated(rule, value, match):
    x0, loss_grad = quadratic(3, 1.0, np.float64)
    calls = []
    with pytest.raises(ValueError, match=match):
        fastopt.sweep(lambda x, g: calls.append(1) or loss_grad(x, g), x0, **{rule: value})
    assert not calls  # checked before any run
    with pytest.raises(ValueError, match=match):
        classify([1.0, 0.5], **{rule: value})
    with pytest.raises(TypeError, match="expected a real number, got str"):
        fastopt.sweep(loss_grad, x0, **{rule: "0.5"})


def test_a_failure_names_the_rate_and_update_and_carries_the_finished_runs():
    x0, loss_grad = quadratic(3, 1.0, np.float64)
    x = x0.copy()
    calls = [0]

    def flaky(p, g):
        calls[0] += 1
        if calls[0] == 2 * 11 + 4:  # third run, after its third update
            raise FloatingPointError("overflow in the model")
        return loss_grad(p, g)

    with pytest.raises(SweepFailed) as e:
        fastopt.sweep(flaky, x, lrs=[0.01, 0.1, 0.3, 1.0], iterations=10)
    failure = e.value
    assert failure.lr == 0.3 and failure.update == 3
    assert "lr=0.3, evaluating the cost after update 3" in str(failure)
    assert "FloatingPointError: overflow in the model" in str(failure)
    assert isinstance(failure.__cause__, FloatingPointError)
    assert failure.costs.shape == (3,) and np.isfinite(failure.costs).all()
    assert list(failure.partial.lrs) == [0.01, 0.1]
    assert failure.partial.costs.shape == (2, 11) and failure.partial.best_lr == 0.1
    assert x.tobytes() == x0.tobytes()


def test_the_table_header_reads_like_a_call():
    x0, loss_grad = quadratic(3, 1.0, np.float64)
    result = fastopt.sweep(loss_grad, x0, lrs=[0.1], iterations=3, momentum=0.9)
    assert result.table().splitlines()[0] == "sweep: SGD(momentum=0.9), 3 updates per run"


@pytest.mark.parametrize("precision", ["bfloat16", "8bit"])
def test_sweep_and_range_test_with_compact_state(precision):
    """The learning-rate tools build their optimizers with the options given, so compact
    state works there: the sweep picks a stable rate (for plain SGD-momentum on this
    quadratic the same as with full state), the range test runs, and params come back.
    """
    x0, loss_grad = quadratic(5000, 4.0, np.float32)  # 8-bit state from 4096 elements
    x = x0.copy()
    options = dict(optimizer=fastopt.Adam, iterations=30, progress=False)
    compact = fastopt.sweep(loss_grad, x, state_precision=precision, **options)
    full = fastopt.sweep(loss_grad, x, **options)
    assert x.tobytes() == x0.tobytes()
    assert compact.best_lr is not None and compact.verdicts[compact.best_index] == "good"
    assert abs(np.log10(compact.best_lr / full.best_lr)) <= 0.5  # a neighbouring rate
    result = fastopt.lr_range_test(
        loss_grad, x, optimizer=fastopt.Adam, iterations=40, state_precision=precision,
        progress=False,
    )  # fmt: skip
    assert x.tobytes() == x0.tobytes()
    assert np.isfinite(result.costs[:5]).all()


def test_a_rise_within_rounding_is_flat_and_a_larger_final_rise_diverged():
    rtol = 1e-6
    assert classify([1.0, 1.0, 1.0 + rtol / 10], increase_rtol=rtol) == "flat"
    assert classify([1.0, 1.0 - rtol / 10, 1.0 + rtol / 10], increase_rtol=rtol) == "flat"
    assert classify([1.0, 1.0, 1.0 + 10 * rtol], increase_rtol=rtol) == "diverged"
    assert classify([-2.0, -2.0, -2.0 + 2 * rtol / 10], increase_rtol=rtol) == "flat"


def test_a_gradient_unconnected_to_the_cost_is_flat_not_diverged():
    """The cost moves only at the 1e-7 level (below increase_rtol), while the gradient
    is an unrelated constant: every run is flat, and the reason says the gradient was
    written but is not the cost's.
    """
    w = np.linspace(-1, 1, 8)

    def loss_grad(p, grad):
        grad[:] = w + 0.3
        return 1.0 + 1e-6 * float(np.sum((p - w) ** 2))

    result = fastopt.sweep(loss_grad, np.zeros(8), lrs=[1e-4, 1e-3, 1e-2], iterations=10)
    changes = np.max(np.abs(result.costs - result.costs[:, :1]), axis=1) / result.costs[:, 0]
    assert np.all(changes > 0) and np.all(changes <= 1e-6)
    assert result.verdicts == ["flat"] * 3 and result.best_lr is None
    assert result.grad_zero is False and "not the gradient of the returned cost" in result.reason


def test_the_stop_is_recorded_and_shown_at_the_update_it_happened():
    """One run goes non-finite, another above 4x the start: each is stopped at the update
    whose cost was evaluated last, and the table says so.
    """
    evaluated = []

    def loss_grad(p, grad):
        grad[:] = p
        evaluated.append(abs(float(p[0])))
        return float("nan") if abs(p[0]) > 3 else 0.5 * float(p @ p)

    result = fastopt.sweep(loss_grad, np.ones(1), lrs=[0.1, 2.8, 3.5], iterations=5)
    # SGD multiplies p by 1 - lr: with lr 2.8, |p| is 1, 1.8, 3.24 (NaN); with lr 3.5 it is
    # 1, 2.5, a cost of 3.125, above 4 x 0.5
    runs = np.split(np.array(evaluated), [6, 9])
    nan_at = int(np.flatnonzero(runs[1] > 3)[0])
    over_at = int(np.flatnonzero(0.5 * runs[2] ** 2 > 4 * 0.5)[0])
    assert result.stopped_at == [None, nan_at, over_at]
    assert np.isnan(result.costs[1, nan_at]) and np.isfinite(result.costs[2, over_at])
    rows = result.table().splitlines()[2:5]
    assert rows[1].endswith(f"diverged (at update {nan_at})")
    assert rows[2].endswith(f"diverged (at update {over_at})") and "at update" not in rows[0]
    assert json.loads(json.dumps(result.to_dict()))["stopped_at"] == result.stopped_at


def test_a_non_finite_starting_cost_is_reported_plainly():
    calls = []

    def loss_grad(p, grad):
        calls.append(1)
        grad[:] = p
        return float("nan")

    result = fastopt.sweep(loss_grad, np.ones(2), lrs=[0.01, 0.1], iterations=3)
    assert len(calls) == 2  # one starting cost per rate, no update made
    assert result.stopped_at == [0, 0] and result.best_lr is None and result.grad_check is None
    assert result.reason.startswith("the starting cost is nan, not a finite number")
    assert "went up" not in result.reason
    for row in result.table().splitlines()[2:4]:
        assert row.endswith("diverged (starting cost nan)") and "-1" not in row
    json.dumps(result.to_dict(), allow_nan=False)


def test_to_dict_is_strict_json_and_reads_back():
    """A sweep whose gradient check meets a NaN difference (sqrt just below 0) and whose
    second run overflows to inf: the dict is strict JSON, and np.asarray reads its
    costs back, NaN and inf included.
    """

    def loss_grad(p, grad):
        grad[:] = -1.0 if p[0] < 1 else -1e300
        with np.errstate(invalid="ignore", over="ignore"):
            return float(np.sqrt(p[0])) if p[0] < 1 else float(np.float64(1e300) * 1e300)

    result = fastopt.sweep(loss_grad, np.zeros(1), lrs=[1e-3, 2.0], iterations=3)
    assert result.grad_check is not None and np.isinf(result.grad_check.max_rel_error)
    assert np.isposinf(result.costs[1]).any()
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    np.testing.assert_array_equal(np.asarray(data["costs"], float), result.costs)
    assert data["grad_check"]["numeric"] == [None]
    assert data["grad_check"]["max_rel_error"] == "inf"


def test_a_gradient_check_that_cannot_be_made_keeps_the_finished_sweep():
    """A NaN in a parameter the cost ignores and a wrong-signed gradient: every rate
    fails, check_grad refuses the NaN, and the sweep still returns its runs.
    """

    def loss_grad(p, grad):
        grad[:] = 0.0
        grad[1] = -2 * p[1]
        return float(p[1] ** 2)

    x = np.array([np.nan, 1.0])
    result = fastopt.sweep(loss_grad, x, lrs=[0.01, 0.1], iterations=5)
    assert result.best_lr is None and result.grad_check is None
    assert "must be finite" in result.grad_check_error
    assert "the gradient could not be checked: the parameters must be finite" in result.reason
    assert result.to_dict()["grad_check_error"] == result.grad_check_error


def test_a_slow_pick_below_a_diverged_rate_says_the_larger_rate_diverged():
    x0, loss_grad = quadratic(2, 10.0, np.float64)
    result = fastopt.sweep(loss_grad, x0, lrs=[1e-6, 1e-5, 0.5], iterations=5)
    assert result.verdicts == ["slow", "slow", "diverged"] and result.best_lr == 1e-5
    assert "every run is slow" not in result.reason
    assert "the larger rate 0.5 diverged or oscillated: try rates between 1e-05 and 0.5" in (
        result.reason
    )
    alone = fastopt.sweep(loss_grad, x0, lrs=[1e-6, 1e-5], iterations=5)
    assert "every run is slow: try larger rates" in alone.reason


def test_an_optimizer_option_it_rejects_is_reported_as_building_the_optimizer():
    x0, loss_grad = quadratic(3, 1.0, np.float64)
    with pytest.raises(SweepFailed, match=r"lr=0.1, building the optimizer: ValueError") as e:
        fastopt.sweep(loss_grad, x0, lrs=[0.1], iterations=3, momentum=-1)
    assert e.value.building and "starting cost" not in str(e.value)


def test_batches_that_run_out_say_how_many_are_needed():
    def loss_grad(p, grad, batch):
        grad[:] = p
        return 0.5 * float(p @ p)

    with pytest.raises(SweepFailed) as e:
        fastopt.sweep(
            loss_grad, np.ones(2), lrs=[0.01], iterations=9, batches=lambda: iter(range(4))
        )
    message = str(e.value.__cause__)
    assert "batches ran out after 4: give at least 10 (one per cost evaluated" in message


def test_a_plot_written_to_a_file_closes_its_figure(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    x0, loss_grad = quadratic(2, 1.0, np.float64)
    result = fastopt.sweep(loss_grad, x0, lrs=[0.01, 0.1], iterations=3)
    open_before = plt.get_fignums()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for k in range(3):
            ax = result.plot(tmp_path / f"sweep{k}.png")
    assert plt.get_fignums() == open_before and ax.get_lines()
    assert (tmp_path / "sweep2.png").read_bytes()[:4] == b"\x89PNG"
