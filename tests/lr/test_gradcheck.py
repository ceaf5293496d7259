"""The finite-difference gradient check."""

import json
import re

import numpy as np
import pytest

import fastopt
from fastopt.lr.gradcheck import DEFAULT_MAX_COORDINATES

from problems import quadratic


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
            return float(0.5 * np.mean(r**2))

        return loss_grad

    before = fp.data.copy()
    good = fastopt.check_grad(make(None), fp)
    assert good.ok and good.max_rel_error < good.tolerance
    assert len(good.coordinates) == 12 and good.directions == 0
    sign = fastopt.check_grad(make("sign"), fp)
    assert not sign.ok and sign.worst_coordinate == 5 and sign.worst_name == "W[1, 1]"
    assert sign.per_array["W"].index == (1, 1) and not sign.per_array["W"].ok
    assert sign.max_rel_error > 0.5 and "FAILED" in sign.message
    scale = fastopt.check_grad(make("scale"), fp)
    assert not scale.ok and scale.max_rel_error == pytest.approx(0.5, rel=0.05)
    assert fp.data.tobytes() == before.tobytes()


def test_check_grad_samples_large_problems_and_includes_the_largest_entry():
    x0, loss_grad = quadratic(1000, 3.0, np.float64)
    result = fastopt.check_grad(loss_grad, x0, max_coordinates=20)
    assert len(result.coordinates) == 20 and result.ok
    assert int(np.argmax(np.abs(x0 * np.geomspace(3 / 50, 3, 1000)))) in result.coordinates
    assert list(result.per_array) == ["params"] and result.directions == 1
    record = result.per_array["params"]
    assert record.ok and record.size == 1000 and record.checked == 20
    assert record.direction_rel_error is not None and record.direction_rel_error < 1e-8


# A 63 -> 16 (tanh) -> 2 softmax classifier: 63 * 16 + 16 + 16 * 2 + 2 = 1,058 parameters.
MLP_SHAPES = {"W1": (63, 16), "b1": (16,), "W2": (16, 2), "b2": (2,)}
WRONG_ELEMENT = {"W1": (10, 5), "W2": (7, 1)}


def mlp(seed, bug=None):
    """Parameters and ``loss_grad`` (mean cross-entropy on random data) of the MLP above;
    ``bug`` is None (the correct gradient), "b2" (its gradient times 3) or a weight name
    (one element of its gradient off by the RMS of that gradient).
    """
    rng = np.random.default_rng(seed)
    n = 50
    x = rng.standard_normal((n, 63))
    y = rng.integers(0, 2, n)
    fp = fastopt.FlatParams(
        {
            "W1": rng.standard_normal((63, 16)) / np.sqrt(63),
            "b1": 0.1 * rng.standard_normal(16),
            "W2": rng.standard_normal((16, 2)) / 4,
            "b2": 0.1 * rng.standard_normal(2),
        }
    )

    def loss_grad(p, grad):
        w1, b1, w2, b2 = (p.params[name] for name in MLP_SHAPES)
        hidden = np.tanh(x @ w1 + b1)
        z = hidden @ w2 + b2
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        dz = np.exp(log_p)
        dz[np.arange(n), y] -= 1
        dz /= n
        dhidden = dz @ w2.T * (1 - hidden**2)
        grads = {"W1": x.T @ dhidden, "b1": dhidden.sum(0), "W2": hidden.T @ dz, "b2": dz.sum(0)}
        if bug == "b2":
            grads["b2"] = 3 * grads["b2"]
        elif bug is not None:
            grads[bug][WRONG_ELEMENT[bug]] += np.sqrt(np.mean(grads[bug] ** 2))
        for name, g in grads.items():
            p.grads[name][...] = g
        return float(-log_p[np.arange(n), y].mean())

    return fp, loss_grad


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_correct_mlp_gradient_passes_every_array(seed):
    fp, loss_grad = mlp(seed)
    assert fp.size == 1058
    result = fastopt.check_grad(loss_grad, fp, seed=seed)
    assert result.ok, result.message
    assert list(result.per_array) == list(MLP_SHAPES)
    checked = {name: r.checked for name, r in result.per_array.items()}
    assert DEFAULT_MAX_COORDINATES == 20
    assert checked == {"W1": 20, "b1": 16, "W2": 20, "b2": 2}
    assert len(result.coordinates) == 58 and result.directions == 2
    assert result.per_array["W1"].direction_rel_error < result.tolerance
    assert result.per_array["b1"].direction_rel_error is None
    assert result.message.startswith("gradient check passed for W1 (")
    assert result.unchecked == ()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_tripled_two_element_bias_gradient_fails_and_is_named(seed):
    fp, loss_grad = mlp(seed, "b2")
    result = fastopt.check_grad(loss_grad, fp, seed=seed)
    assert not result.ok
    assert [r.name for r in result.failed] == ["b2"]
    b2 = result.per_array["b2"]
    assert b2.rel_error == pytest.approx(2 / 3, rel=1e-4)
    assert b2.index in [(0,), (1,)] and b2.analytic == pytest.approx(3 * b2.numeric, rel=1e-4)
    assert all(result.per_array[name].ok for name in ("W1", "b1", "W2"))
    assert result.worst_name == f"b2[{b2.index[0]}]"
    assert result.message.startswith(
        f"gradient check FAILED for b2 (max relative error 0.67 at b2[{b2.index[0]}]: "
    )
    assert "; passed: W1 (" in result.message and ", b1 (" in result.message


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("weight", ["W1", "W2"])
def test_one_wrong_weight_element_fails_and_is_located(seed, weight):
    fp, loss_grad = mlp(seed, weight)
    result = fastopt.check_grad(loss_grad, fp, seed=seed)
    assert not result.ok
    assert [r.name for r in result.failed] == [weight]
    record = result.per_array[weight]
    assert record.index == WRONG_ELEMENT[weight] and record.rel_error > 0.1
    flat = fp.slices[weight].start + np.ravel_multi_index(record.index, MLP_SHAPES[weight])
    assert record.coordinate == flat and flat in result.coordinates
    assert record.direction_rel_error > result.tolerance
    row, column = WRONG_ELEMENT[weight]
    assert result.worst_name == f"{weight}[{row}, {column}]"
    assert f"FAILED for {weight} (max relative error" in result.message
    assert f"at {weight}[{row}, {column}]: analytic" in result.message


def test_a_wrong_element_is_found_when_the_sample_misses_it():
    fp, loss_grad = mlp(0, "W1")
    bug = fp.slices["W1"].start + np.ravel_multi_index(WRONG_ELEMENT["W1"], (63, 16))
    result = fastopt.check_grad(loss_grad, fp, max_coordinates=1)
    assert result.coordinates[0] != bug and result.coordinates[1] == bug
    assert result.per_array["W1"].checked == 2 and result.per_array["W1"].index == (10, 5)


def test_a_non_finite_gradient_entry_in_a_large_array_fails():
    fp, loss_grad = mlp(1)

    def with_nan(p, grad):
        cost = loss_grad(p, grad)
        p.grads["W1"][30, 2] = np.nan
        return cost

    result = fastopt.check_grad(with_nan, fp)
    assert not result.ok and [r.name for r in result.failed] == ["W1"]
    assert result.worst_name == "W1[30, 2]" and result.max_rel_error == np.inf


def test_message_format_names_the_failing_array_and_the_passing_ones():
    fp = fastopt.FlatParams({"W": np.array([[1.0, -2.0], [0.5, 3.0]]), "b": np.array([0.5, 1.0])})

    def loss_grad(p, grad, wrong=True):
        p.grads["W"][...] = p.params["W"]
        p.grads["b"][...] = p.params["b"] * (np.array([1.0, 3.0]) if wrong else 1.0)
        return 0.5 * float(p.data @ p.data)

    bad = fastopt.check_grad(loss_grad, fp)
    pattern = (
        r"gradient check FAILED for b \(max relative error 0\.67 at b\[1\]: analytic 3 vs "
        r"numeric 1\); passed: W \([0-9.e+-]+\); tolerance 1e-05, 6 coordinates checked: "
        r"the gradient is probably wrong"
    )
    assert re.fullmatch(pattern, bad.message), bad.message
    assert bad.per_array["b"].index == (1,) and bad.per_array["b"].analytic == 3.0
    assert bad.per_array["b"].numeric == pytest.approx(1.0, rel=1e-9)
    good = fastopt.check_grad(lambda p, g: loss_grad(p, g, wrong=False), fp)
    pattern = (
        r"gradient check passed for W \([0-9.e+-]+\), b \([0-9.e+-]+\): max relative error "
        r"[0-9.e+-]+ at (W|b)\[[0-9, ]+\] \(analytic \S+ vs numeric \S+\); tolerance 1e-05, "
        r"6 coordinates checked"
    )
    assert good.ok and re.fullmatch(pattern, good.message), good.message


def test_every_failing_array_is_named():
    fp, loss_grad = mlp(2)

    def two_bugs(p, grad):
        cost = loss_grad(p, grad)
        p.grads["b1"][3] *= -2
        p.grads["W2"][...] *= 1.5
        return cost

    result = fastopt.check_grad(two_bugs, fp)
    assert [r.name for r in result.failed] == ["b1", "W2"]
    assert result.message.startswith("gradient check FAILED for b1 (")
    assert "), W2 (max relative error 0.33 at W2[" in result.message
    assert "; passed: W1 (" in result.message and ", b2 (" in result.message


def test_to_dict_is_json_and_holds_the_per_array_findings():
    fp, loss_grad = mlp(0, "b2")
    data = json.loads(json.dumps(fastopt.check_grad(loss_grad, fp).to_dict()))
    assert data["ok"] is False and data["worst_name"] in ("b2[0]", "b2[1]")
    assert list(data["per_array"]) == ["W1", "b1", "W2", "b2"]
    b2 = data["per_array"]["b2"]
    assert b2["ok"] is False and b2["size"] == 2 and b2["checked"] == 2
    assert b2["index"] in ([0], [1]) and b2["rel_error"] == pytest.approx(2 / 3, rel=1e-4)
    assert data["per_array"]["W1"]["ok"] is True and data["directions"] == 2
    assert len(data["coordinates"]) == len(data["rel_errors"]) == len(data["analytic"]) == 58


def test_positional_and_zero_dimensional_arrays_are_labelled():
    fp = fastopt.FlatParams([np.array([1.0, 2.0, 3.0]), np.array(2.0)])

    def loss_grad(p, grad):
        grad[:] = p.data * np.array([1.0, 1.0, 1.0, 2.0])
        return 0.5 * float(p.data @ p.data)

    result = fastopt.check_grad(loss_grad, fp)
    assert list(result.per_array) == [0, 1] and [r.name for r in result.failed] == [1]
    assert result.per_array[1].label == "params[1]" and result.per_array[1].index == ()
    assert result.worst_name == "params[1]" and result.worst_coordinate == 3
    assert "FAILED for params[1] (max relative error 0.5 at params[1]:" in result.message
    assert "passed: params[0] (" in result.message


def test_explicit_coordinates_check_exactly_those_and_name_the_rest():
    fp = fastopt.FlatParams(
        {"W": np.arange(6.0).reshape(2, 3), "b": np.array([1.0, -1.0])}, groups={"g": ["b"]}
    )
    assert fp.slices["b"] == slice(0, 2)

    def loss_grad(p, grad):
        grad[:] = p.data
        grad[1] *= 2
        return 0.5 * float(p.data @ p.data)

    result = fastopt.check_grad(loss_grad, fp, coordinates=np.array([1, 7, 1], np.int32))
    assert result.coordinates.tolist() == [7, 1] and result.directions == 0
    assert list(result.per_array) == ["W", "b"] and result.unchecked == ()
    assert result.per_array["W"].index == (1, 2) and result.per_array["W"].ok
    assert result.worst_name == "b[1]" and not result.ok
    only_w = fastopt.check_grad(loss_grad, fp, coordinates=[2, 3])
    assert only_w.ok and list(only_w.per_array) == ["W"] and only_w.unchecked == ("b",)
    assert only_w.message.endswith("; not checked: b")


def calls_counted(loss_grad):
    calls = []

    def counted(*args):
        calls.append(1)
        return loss_grad(*args)

    return counted, calls


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"eps": 0}, ValueError, r"Invalid eps: 0 \(expected a finite step > 0\)"),
        ({"eps": 0.0}, ValueError, r"Invalid eps: 0\.0 \(expected a finite step > 0\)"),
        ({"eps": -1e-6}, ValueError, r"Invalid eps: -1e-06 \(expected a finite step > 0\)"),
        ({"eps": float("nan")}, ValueError, r"Invalid eps: nan \(expected a finite step > 0\)"),
        ({"eps": float("inf")}, ValueError, r"Invalid eps: inf \(expected a finite step > 0\)"),
        ({"eps": "1e-6"}, TypeError, r"Invalid eps: '1e-6' \(expected a real number"),
        (
            {"max_coordinates": 0},
            ValueError,
            r"Invalid max_coordinates: 0 \(expected an integer >= 1",
        ),
        ({"max_coordinates": -5}, ValueError, r"Invalid max_coordinates: -5 \(expected an integer"),
        (
            {"max_coordinates": 2.5},
            TypeError,
            r"Invalid max_coordinates: 2\.5 \(expected an integer",
        ),
        ({"max_coordinates": 20.0}, TypeError, r"Invalid max_coordinates: 20\.0 \(expected an int"),
        ({"max_coordinates": True}, TypeError, r"Invalid max_coordinates: True \(expected an int"),
        ({"tolerance": 0}, ValueError, r"Invalid tolerance: 0 \(expected a finite relative error"),
        ({"tolerance": -1e-5}, ValueError, r"Invalid tolerance: -1e-05 \(expected a finite rel"),
        ({"tolerance": float("nan")}, ValueError, r"Invalid tolerance: nan \(expected a finite"),
        ({"tolerance": float("inf")}, ValueError, r"Invalid tolerance: inf \(expected a finite"),
        ({"tolerance": "big"}, TypeError, r"Invalid tolerance: 'big' \(expected a real number"),
        ({"coordinates": [0.9]}, TypeError, r"Invalid coordinates: \[0\.9\] \(expected a non-emp"),
        ({"coordinates": [1.7, 2]}, TypeError, r"Invalid coordinates: \[1\.7, 2\.0\] .*float64"),
        ({"coordinates": [1.0]}, TypeError, r"Invalid coordinates: \[1\.0\] .*integer flat ind"),
        ({"coordinates": [True]}, TypeError, r"Invalid coordinates: \[True\] .*got bool values"),
        ({"coordinates": [[0, 1]]}, ValueError, r"Invalid coordinates: \[\[0, 1\]\] .*shape \(1,"),
        ({"coordinates": 3}, ValueError, r"Invalid coordinates: 3 \(expected a non-empty 1-D"),
        ({"coordinates": []}, ValueError, r"Invalid coordinates: \[\] \(expected a non-empty"),
        ({"coordinates": np.array([], int)}, ValueError, r"Invalid coordinates: \[\] \(expect"),
        (
            {"coordinates": [-1, 2]},
            ValueError,
            r"Invalid coordinates: \[-1\] out of range .*\[0, 6",
        ),
        ({"coordinates": [2, 6, 9]}, ValueError, r"Invalid coordinates: \[6, 9\] out of range"),
        ({"coordinates": [[0], [1, 2]]}, TypeError, r"Invalid coordinates: \[\[0\], \[1, 2\]\]"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(kwargs, error, match):
    fp = fastopt.FlatParams({"w": np.array([1.0, 2.0, 3.0, 4.0]), "b": np.array([0.5, 0.25])})

    def loss_grad(p, grad):
        grad[:] = p.data
        return 0.5 * float(p.data @ p.data)

    counted, calls = calls_counted(loss_grad)
    with pytest.raises(error, match=match):
        fastopt.check_grad(counted, fp, **kwargs)
    assert calls == []


def test_an_eps_too_small_or_large_for_the_dtype_is_refused_and_everything_restored():
    fp = fastopt.FlatParams({"w": np.array([1.0, 2.0], np.float32)})
    fp.grad[:] = [7.0, -7.0]

    def loss_grad(p, grad):
        grad[:] = p.data
        return 0.5 * float(p.data @ p.data)

    with pytest.raises(ValueError, match=r"Invalid eps: 1e-30 \(too small for w\[0\] = 1\.0"):
        fastopt.check_grad(loss_grad, fp, eps=1e-30)
    assert fp.data.tolist() == [1.0, 2.0] and fp.grad.tolist() == [7.0, -7.0]
    with pytest.raises(ValueError, match=r"Invalid eps: 1e\+300 \(too large for w\[0\] = 1\.0"):
        fastopt.check_grad(loss_grad, fp, eps=1e300)
    assert fp.data.tolist() == [1.0, 2.0] and fp.grad.tolist() == [7.0, -7.0]


def test_non_finite_parameters_are_refused():
    fp = fastopt.FlatParams({"w": np.array([1.0, np.nan])})

    def loss_grad(p, grad):
        grad[:] = p.data
        return 0.0

    with pytest.raises(ValueError, match=r"must be finite .* w\[1\] = nan"):
        fastopt.check_grad(loss_grad, fp)


@pytest.mark.parametrize("bug", [None, "b2", "W1", "raises"])
def test_params_and_the_grad_buffer_are_restored_bit_for_bit(bug):
    fp, loss_grad = mlp(0, None if bug == "raises" else bug)
    rng = np.random.default_rng(9)
    fp.grad[:] = rng.standard_normal(fp.size)
    data, grad = fp.data.tobytes(), fp.grad.tobytes()
    counted, calls = calls_counted(loss_grad)

    def maybe_raising(p, g):
        if bug == "raises" and len(calls) == 40:
            raise RuntimeError("loss_grad failed")
        return counted(p, g)

    if bug == "raises":
        with pytest.raises(RuntimeError, match="loss_grad failed"):
            fastopt.check_grad(maybe_raising, fp)
    else:
        assert fastopt.check_grad(maybe_raising, fp).ok is (bug is None)
    assert len(calls) >= 40
    assert fp.data.tobytes() == data and fp.grad.tobytes() == grad


def test_a_plain_array_is_restored_and_named_params():
    x0, good = quadratic(300, 2.0, np.float64)
    x = x0.copy()

    def wrong(v, grad):
        cost = good(v, grad)
        grad[123] *= 1.5
        return cost

    result = fastopt.check_grad(wrong, x)
    assert x.tobytes() == x0.tobytes()
    assert not result.ok and result.worst_name == "params[123]"
    assert result.per_array["params"].index == (123,)
    assert result.message.startswith("gradient check FAILED for params (max relative error ")


def test_a_cost_that_is_not_a_number_is_reported():
    def loss_grad(v, grad):
        grad[:] = v
        return "cost"

    with pytest.raises(TypeError, match="loss_grad must return the cost as a number"):
        fastopt.check_grad(loss_grad, np.ones(3))


def test_check_grad_refusals_are_grad_check_errors_naming_what_to_change():
    """check_grad's own refusals are GradCheckError (still a ValueError); an error raised
    inside loss_grad passes through as it was, so a caller can tell the two apart.
    """
    from fastopt.lr import GradCheckError

    def loss_grad(p, grad):
        grad[:] = p.data
        return 0.5 * float(p.data @ p.data)

    big = fastopt.FlatParams({"w": np.full(3, 1e6, np.float32)})
    with pytest.raises(GradCheckError, match=r"Invalid eps: 1e-05 \(too small") as error:
        fastopt.check_grad(loss_grad, big, eps=1e-5)
    assert error.value.argument == "eps" and isinstance(error.value, ValueError)
    with pytest.raises(GradCheckError, match=r"must be finite") as error:
        fastopt.check_grad(loss_grad, fastopt.FlatParams({"w": np.array([np.nan, 1.0])}))
    assert error.value.argument == "params"

    def raising(p, grad):
        raise ValueError("the user's own error")

    with pytest.raises(ValueError, match="the user's own error") as error:
        fastopt.check_grad(raising, np.ones(2))
    assert not isinstance(error.value, GradCheckError)


def test_to_dict_is_strict_json_when_the_difference_is_not_finite():
    """At x = 0 the step below gives sqrt a NaN cost, so the difference is NaN and the
    relative error infinite; to_dict writes None and "inf", which read back as both.
    """

    def loss_grad(p, grad):
        grad[:] = 1.0
        with np.errstate(invalid="ignore"):
            return float(np.sqrt(p[0]))

    result = fastopt.check_grad(loss_grad, np.zeros(1))
    assert not result.ok and np.isnan(result.numeric[0]) and np.isinf(result.max_rel_error)
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["numeric"] == [None] and data["max_rel_error"] == "inf"
    assert data["per_array"]["params"]["numeric"] is None
    for key in ("analytic", "numeric", "rel_errors"):
        np.testing.assert_array_equal(np.asarray(data[key], float), getattr(result, key))
    assert float(data["max_rel_error"]) == result.max_rel_error
