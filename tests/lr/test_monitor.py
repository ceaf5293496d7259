"""The cost monitor."""

import pytest

import fastopt


def test_cost_monitor_messages_and_actions():
    monitor = fastopt.CostMonitor(on_increase="ignore")
    for cost in [3.1, 3.0, 3.4, 2.0, 2.0000000001]:
        monitor(cost)
    assert monitor.increases == [2]
    assert monitor.events[0].message == (
        "cost went up at iteration 2 (3 -> 3.4): the learning rate may be too large, or the "
        "gradient may be wrong; try lr/3, or a very small lr to check that the cost then "
        "decreases every iteration"
    )
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


def test_monitor_feeds_nan_costs_to_the_plateau_as_bad_steps():
    plateau = fastopt.schedules.reduce_on_plateau(0.1, patience=1)
    monitor = fastopt.CostMonitor(on_increase="ignore", on_nonfinite="ignore", plateau=plateau)
    for cost in [3.0, float("nan"), float("nan")]:
        monitor(cost)
    assert plateau(0) == pytest.approx(0.01)


def test_a_schedule_that_is_not_fed_the_cost_is_refused_as_plateau():
    cosine = fastopt.schedules.cosine_decay(0.1, 10)
    with pytest.raises(TypeError, match=r"Invalid plateau: cosine_decay\(.*step\(cost\) method"):
        fastopt.CostMonitor(plateau=cosine)
