"""The learning-rate sweep, the range test, the cost monitor and the gradient check."""
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastopt
from fastopt import demo
from fastopt.sweep import DEFAULT_LRS, classify


def quadratic(dim, top_curvature, dtype, seed=0):
    """f(x) = sum(lam * x^2) / 2 with curvatures from L/50 to L (L included)."""
    rng = np.random.default_rng(seed)
    lam = np.geomspace(top_curvature / 50, top_curvature, dim) if dim > 1 \
        else np.array([top_curvature])
    lam = lam.astype(dtype)
    x0 = rng.standard_normal(dim).astype(dtype) + dtype(0.5)

    def loss_grad(x, grad):
        np.multiply(lam, x, out=grad)
        return 0.5 * float(np.dot(grad, x))
    return x0, loss_grad


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


def logistic_problem(dtype=np.float64):
    images, labels = fastopt.datasets.load_digits()
    x = ((images - images.mean(0)) / (images.std(0) + 1.0)).astype(dtype)
    y = (labels >= 5).astype(dtype)

    def loss_grad(w, grad):
        z = x @ w[:-1] + w[-1]
        p = np.exp(-np.logaddexp(0, -z))   # sigmoid without overflow
        loss = np.mean(np.logaddexp(0, z) - y * z)
        r = (p - y) / len(y)
        grad[:-1] = x.T @ r
        grad[-1] = r.sum()
        return float(loss)
    return np.zeros(x.shape[1] + 1, dtype), loss_grad


@pytest.mark.parametrize("optimizer, options, compare_with", [
    (fastopt.SGD, {}, ("good", "slow", "oscillating")),
    (fastopt.Adam, {}, ("good", "slow", "oscillating")),
    # with momentum, lr=3 ends lower but rises on 5 of 40 updates: never picked
    (fastopt.SGD, {"momentum": 0.9}, ("good", "slow")),
])
def test_logistic_regression_pick_reaches_the_lowest_cost(optimizer, options, compare_with):
    w0, loss_grad = logistic_problem()
    w = w0.copy()
    lrs = DEFAULT_LRS + (10.0, 30.0, 100.0)
    result = fastopt.sweep(loss_grad, w, optimizer=optimizer, lrs=lrs, iterations=40, **options)
    assert w.tobytes() == w0.tobytes()
    assert result.verdicts[-1] in ("diverged", "oscillating") and result.best_lr < 10
    finals = {lr: row[-1] for lr, row, v in zip(result.lrs, result.costs, result.verdicts)
              if v in compare_with}
    assert result.best_lr is not None
    best = finals[result.best_lr]
    assert all(best <= cost for cost in finals.values()), (result.table())
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
    calls["n"] = -10**9
    result = fastopt.sweep(loss_grad, fp, lrs=[0.01, 0.1, 0.3, 1.0], iterations=50)
    assert result.verdicts[-2:] == ["diverged", "diverged"]
    assert np.isnan(result.costs[-1, 5:]).all()
    assert fp.data.tobytes() == before[0].tobytes()
    assert fp.grad.tobytes() == before[1].tobytes()


@pytest.mark.parametrize("costs, verdict", [
    ([3.0, 2.0, np.nan, np.nan], "diverged"),
    ([3.0, 2.0, np.inf, 1.0], "diverged"),
    ([3.0, 5.0, 13.0, 2.0], "diverged"),               # above 4x the start
    ([3.0, 2.0, 2.5, 3.1], "diverged"),                # ended above the start
    ([3.0, 2.0, 2.5, 1.5, 1.7, 1.2, 1.0], "oscillating"),   # 2 rises in 6 updates
    ([3.0, 2.99, 2.985, 2.98], "slow"),                # 0.7% decrease
    ([3.0] + [3.0 - 0.1 * k for k in range(1, 20)] + [1.2], "good"),  # 1 rise in 20
    ([3.0, 2.0, 1.0, 0.5], "good"),
    ([-1.0, -1.5, -2.0], "good"),                      # negative costs work too
    ([-1.0, -0.5, 4.0], "diverged"),
])
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
    result = fastopt.sweep(loss_grad, np.zeros(5), lrs=[0.01, 0.1], iterations=30,
                           batches=batches, max_increase_share=0.3)
    assert seen[:31] == seen[31:62] == [bt[0] for bt in batches]
    assert result.best_lr == 0.1
    with pytest.raises(TypeError, match="one-shot iterator cannot be replayed"):
        fastopt.sweep(loss_grad, np.zeros(5), batches=iter(batches))
    with pytest.raises(ValueError, match="batches ran out"):
        fastopt.sweep(loss_grad, np.zeros(5), lrs=[0.01], iterations=40, batches=batches)


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
    with pytest.raises(TypeError, match=r"loss_grad must return the cost as a number"):
        fastopt.sweep(lambda x, g: "low", x0, lrs=[0.1], iterations=2)


def test_range_test_finds_the_stability_edge_and_restores(tmp_path):
    x0, loss_grad = quadratic(50, 4.0, np.float64)
    x = x0.copy()
    result = fastopt.lr_range_test(loss_grad, x, min_lr=1e-5, max_lr=100, iterations=200)
    assert x.tobytes() == x0.tobytes()
    assert result.stopped_at is not None and result.lrs[result.stopped_at] > 2 / 4.0
    assert 1e-3 < result.suggested_lr < 2 / 4.0
    assert np.isnan(result.costs[result.stopped_at + 1:]).all()
    np.testing.assert_allclose(result.lrs[[0, -1]], [1e-5, 100])
    assert "suggestion lr=" in result.reason and "fastopt.sweep" in result.reason
    assert json.loads(json.dumps(result.to_dict()))["stopped_at"] == result.stopped_at
    assert "range test: SGD" in result.table()
    pytest.importorskip("matplotlib")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        result.plot(tmp_path / "range.png")
    assert (tmp_path / "range.png").read_bytes()[:4] == b"\x89PNG"


def test_cost_monitor_messages_and_actions():
    monitor = fastopt.CostMonitor(on_increase="ignore")
    for cost in [3.1, 3.0, 3.4, 2.0, 2.0000000001]:
        monitor(cost)
    assert monitor.increases == [2]
    assert monitor.events[0].message == (
        "cost went up at iteration 2 (3 -> 3.4): the learning rate may be too large, or the "
        "gradient may be wrong; try lr/3, or a very small lr to check that the cost then "
        "decreases every iteration")
    assert monitor.summary() == "4 iterations, cost 3.1 -> 2, went up 1 time"

    with pytest.warns(fastopt.CostWarning, match=r"cost went up at iteration 1 \(1 -> 2\)"):
        fastopt.CostMonitor()(1.0) or fastopt.CostMonitor()
        warned = fastopt.CostMonitor()
        warned(1.0)
        warned(2.0)
    strict = fastopt.CostMonitor(on_increase="raise")
    strict(1.0)
    with pytest.raises(fastopt.CostIncreaseError, match="iteration 1"):
        strict(1.5)
    with pytest.raises(fastopt.NonFiniteCostError, match=r"cost is nan at iteration 0"):
        fastopt.CostMonitor()(float("nan"))
    seen = []
    callback = fastopt.CostMonitor(on_increase=seen.append, on_nonfinite=seen.append)
    for cost in [1.0, 2.0, float("inf")]:
        callback(cost)
    assert [e.kind for e in seen] == ["increase", "nonfinite"]
    with pytest.raises(ValueError, match=r"Invalid on_increase: 'shout'"):
        fastopt.CostMonitor(on_increase="shout")


def test_cost_monitor_drives_reduce_on_plateau():
    plateau = fastopt.schedules.reduce_on_plateau(0.1, patience=2)
    monitor = fastopt.CostMonitor(on_increase="ignore", plateau=plateau)
    for cost in [5, 4, 4, 4, 4]:
        monitor(cost)
    assert plateau(0) == pytest.approx(0.01)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_check_grad_passes_a_correct_gradient_and_catches_bugs(dtype):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((30, 12))
    b = rng.standard_normal(30)
    fp = fastopt.FlatParams({"W": rng.standard_normal((3, 4)).astype(dtype)})

    def make(bug):
        def loss_grad(params, grad):
            w = params.data.astype(np.float64)
            r = np.tanh(a @ w) - b
            g = a.T @ (r * (1 - np.tanh(a @ w) ** 2)) / len(b)
            if bug == "sign":
                g[5] = -g[5]
            elif bug == "scale":
                g = 2 * g
            grad[:] = g
            return float(0.5 * np.mean(r ** 2))
        return loss_grad

    before = fp.data.copy()
    good = fastopt.check_grad(make(None), fp)
    assert good.ok and good.max_rel_error < good.tolerance
    assert len(good.coordinates) == 12
    sign = fastopt.check_grad(make("sign"), fp)
    assert not sign.ok and sign.worst_coordinate == 5 and sign.worst_name == "W[1, 1]"
    assert sign.max_rel_error > 0.5 and "FAILED" in sign.message
    scale = fastopt.check_grad(make("scale"), fp)
    assert not scale.ok and scale.max_rel_error == pytest.approx(0.5, rel=0.05)
    assert fp.data.tobytes() == before.tobytes()


def test_check_grad_samples_large_problems_and_includes_the_largest_entry():
    x0, loss_grad = quadratic(1000, 3.0, np.float64)
    result = fastopt.check_grad(loss_grad, x0, max_coordinates=20)
    assert len(result.coordinates) == 20 and result.ok
    assert int(np.argmax(np.abs(x0 * np.geomspace(3 / 50, 3, 1000)))) in result.coordinates


def test_sweep_demo_command(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "sweep.png"
    out = subprocess.run([sys.executable, "-m", "fastopt", "sweep", "--demo", "--iterations",
                          "25", "--plot", str(png), "--train-epochs", "2"], capture_output=True,
                         text=True, timeout=300, check=True).stdout
    assert "pick: lr=" in out and "diverged" in out
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "training with the chosen lr=" in out and "final: train accuracy" in out


def test_digits_problem_batches():
    fp, loss_grad, batches = demo.digits_problem(30)
    assert len(batches) == 31 and all(len(b) == 64 for b in batches[:21])
    cost = loss_grad(fp, fp.grad, batches[0])
    assert 2.0 < cost < 3.0 and fp.grad.any()


class _Terminal:
    def __init__(self, tty):
        self.text, self.tty = [], tty

    def isatty(self):
        return self.tty

    def write(self, text):
        self.text.append(text)

    def flush(self):
        pass


@pytest.mark.parametrize("tty, enabled, shown", [(True, None, True), (False, None, False),
                                                 (True, False, False), (False, True, True)])
def test_progress_bar_only_on_a_terminal_unless_asked(tty, enabled, shown):
    from fastopt._progress import Progress
    stream = _Terminal(tty)
    bar = Progress(10, "sweep", enabled=enabled, delay=0.0, stream=stream)
    for _ in range(10):
        bar.advance(1, "lr=0.1")
    bar.close()
    text = "".join(stream.text)
    assert bool(text) == shown
    if shown:
        assert "sweep [" in text and "10/10" in text and text.endswith("\n")


def test_monitor_feeds_nan_costs_to_the_plateau_as_bad_steps():
    plateau = fastopt.schedules.reduce_on_plateau(0.1, patience=1)
    monitor = fastopt.CostMonitor(on_increase="ignore", on_nonfinite="ignore", plateau=plateau)
    for cost in [3.0, float("nan"), float("nan")]:
        monitor(cost)
    assert plateau(0) == pytest.approx(0.01)
