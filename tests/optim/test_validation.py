"""Bad input gets a clear error before anything is mutated."""

import numpy as np
import pytest

import fastopt
from fastopt.kernels import host

from registry import CASE_IDS, CASES, make

CONSTRUCTOR_ERRORS = [
    ("SGD", {"lr": -1.0}, ValueError, r"Invalid learning rate: -1\.0 \(expected 0 <= lr\)"),
    ("Adam", {"lr": float("nan")}, ValueError, r"Invalid learning rate: nan"),
    ("Adam", {"lr": "0.1"}, TypeError, r"Invalid learning rate: '0.1' \(expected a real number"),
    ("Adam", {"eps": -1e-8}, ValueError, r"Invalid epsilon value: -1e-08"),
    (
        "Adam",
        {"betas": (1.0, 0.999)},
        ValueError,
        r"Invalid beta parameter at index 0: 1\.0 \(expected 0 <= beta < 1\)",
    ),
    ("Adam", {"betas": (-0.1, 0.9)}, ValueError, r"Invalid beta parameter at index 0: -0\.1"),
    ("AdamW", {"betas": (0.9, 1.0)}, ValueError, r"Invalid beta parameter at index 1: 1\.0"),
    ("Adam", {"betas": (0.9,)}, ValueError, r"Invalid betas: \(0\.9,\) \(expected a pair"),
    ("Adam", {"weight_decay": -1}, ValueError, r"Invalid weight_decay value: -1"),
    ("Adam", {"amsgrad": 1}, TypeError, r"Invalid amsgrad: 1 \(expected True or False\)"),
    ("SGD", {"momentum": -0.5}, ValueError, r"Invalid momentum value: -0\.5"),
    ("SGD", {"nesterov": True}, ValueError, r"Nesterov momentum requires a momentum and zero"),
    (
        "SGD",
        {"nesterov": True, "momentum": 0.9, "dampening": 0.1},
        ValueError,
        r"Nesterov momentum requires a momentum and zero dampening",
    ),
    ("SGD", {"weight_decay": float("nan")}, ValueError, r"Invalid weight_decay value: nan"),
    (
        "RMSprop",
        {"alpha": -0.1},
        ValueError,
        r"Invalid alpha value: -0\.1 \(expected 0 <= alpha <= 1\)",
    ),
    ("RMSprop", {"alpha": 1.5}, ValueError, r"Invalid alpha value: 1\.5"),
    ("RMSprop", {"momentum": -1}, ValueError, r"Invalid momentum value: -1"),
    ("RMSprop", {"eps": -1}, ValueError, r"Invalid epsilon value: -1"),
    ("Adagrad", {"lr_decay": -1}, ValueError, r"Invalid lr_decay value: -1"),
    (
        "Adagrad",
        {"initial_accumulator_value": -1},
        ValueError,
        r"Invalid initial_accumulator_value value: -1",
    ),
    (
        "Adam",
        {"max_grad_norm": 0},
        ValueError,
        r"Invalid max_grad_norm: 0 \(expected 0 < max_grad_norm\)",
    ),
    (
        "Adam",
        {"param_groups": [{"params": slice(0, 2), "momentum": 0.1}]},
        ValueError,
        r"param_groups\[0\] has unknown keys \['momentum'\]",
    ),
    (
        "Adam",
        {"param_groups": [{"params": slice(0, 3)}, {"params": slice(2, 4)}]},
        ValueError,
        r"some parameters appear in more than one parameter group",
    ),
    (
        "Adam",
        {"param_groups": [{"params": slice(0, 2), "lr": -1}]},
        ValueError,
        r"Invalid learning rate: -1",
    ),
    ("Adam", {"param_groups": [{"params": ["a"]}]}, TypeError, r"array names need a FlatParams"),
]


@pytest.mark.parametrize("name, kwargs, error, message", CONSTRUCTOR_ERRORS)
def test_constructor_rejects(name, kwargs, error, message):
    with pytest.raises(error, match=message):
        make(name, np.zeros(8, np.float32), **kwargs)


BAD_PARAMS = [
    (np.zeros(0, np.float32), ValueError, r"empty parameter list"),
    (np.zeros(4, np.int64), TypeError, r"params must be float32 or float64, but got int64"),
    (np.zeros(4, np.complex64), TypeError, r"but got complex64"),
    (np.zeros(4, np.float16), TypeError, r"but got float16"),
    (np.zeros(8, np.float32)[::2], ValueError, r"params must be C-contiguous"),
    (np.zeros((4, 4), np.float32).T, ValueError, r"params must be C-contiguous"),
    (
        [0.0, 1.0],
        TypeError,
        r"should be a fastopt.FlatParams, a numpy.ndarray or a device array .*but got list",
    ),
]


@pytest.mark.parametrize("params, error, message", BAD_PARAMS)
def test_bad_params_rejected(params, error, message):
    with pytest.raises(error, match=message):
        fastopt.Adam(params)


def test_read_only_params_rejected():
    p = np.zeros(4, np.float32)
    p.flags.writeable = False
    with pytest.raises(ValueError, match=r"params must be writeable, but the array is read-only"):
        fastopt.SGD(p)


def snapshot(opt, params):
    return params.copy(), {k: np.copy(v) for k, v in opt.state.items()}


def assert_unchanged(opt, params, before):
    p, state = before
    assert params.tobytes() == p.tobytes()
    assert set(opt.state) == set(state)
    for key, value in state.items():
        assert np.asarray(opt.state[key]).tobytes() == np.asarray(value).tobytes(), key


def bad_grads(dtype):
    other = np.float64 if dtype == np.float32 else np.float32
    return [
        (
            np.ones(6, dtype),
            ValueError,
            r"grad must have the shape of params: expects \(7,\) but got \(6,\)",
        ),
        (np.ones(8, dtype), ValueError, r"expects \(7,\) but got \(8,\)"),
        (np.ones((7, 1), dtype), ValueError, r"expects \(7,\) but got \(7, 1\)"),
        (
            np.ones(7, other),
            TypeError,
            rf"grad must have the dtype of params: expects {np.dtype(dtype)} "
            rf"but got {np.dtype(other)}",
        ),
        (np.ones(14, dtype)[::2], ValueError, r"grad must be C-contiguous"),
        ([1.0] * 7, TypeError, r"grad must be a numpy.ndarray, but got list"),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, options", CASES, ids=CASE_IDS)
def test_bad_gradient_changes_nothing(name, options, dtype, rng):
    params = rng.standard_normal(7).astype(dtype)
    opt = make(name, params, lr=0.1, **options)
    for _ in range(3):
        opt.step(rng.standard_normal(7).astype(dtype))
    before = snapshot(opt, params)
    for grad, error, message in bad_grads(dtype):
        with pytest.raises(error, match=message):
            opt.step(grad)
        assert_unchanged(opt, params, before)
    serial, parallel = host.KERNELS[opt.algorithm.name, "full"]
    assert len(serial.signatures) == len({np.dtype(s[0].dtype.name) for s in serial.signatures})


def test_plain_array_needs_explicit_grad():
    opt = fastopt.Adam(np.zeros(3))
    with pytest.raises(
        ValueError, match=r"step\(\) needs grad= when the optimizer was built on a plain array"
    ):
        opt.step()
    with pytest.raises(RuntimeError, match=r"has no gradient buffer"):
        opt.zero_grad()


@pytest.mark.parametrize(
    "bad_lr, error, message",
    [
        (float("nan"), ValueError, r"Invalid learning rate from schedule at step 2: nan"),
        (
            -0.5,
            ValueError,
            r"Invalid learning rate from schedule at step 2: -0\.5 \(expected 0 <= lr\)",
        ),
        ("fast", TypeError, r"Invalid learning rate from schedule at step 2: 'fast'"),
    ],
)
def test_bad_scheduled_lr_changes_nothing(bad_lr, error, message, rng):
    params = rng.standard_normal(5)
    opt = fastopt.Adam(params, lr=lambda t: 0.1 if t < 2 else bad_lr)
    g = rng.standard_normal(5)
    opt.step(g)
    opt.step(g)
    before = snapshot(opt, params)
    with pytest.raises(error, match=message):
        opt.step(g)
    assert_unchanged(opt, params, before)
    assert opt.step_count == 2


def test_invalid_group_hyperparameter_set_later_changes_nothing(rng):
    params = rng.standard_normal(5)
    opt = fastopt.SGD(params, lr=0.1, momentum=0.9)
    opt.step(rng.standard_normal(5))
    before = snapshot(opt, params)
    opt.param_groups[0]["weight_decay"] = -1.0
    with pytest.raises(ValueError, match=r"Invalid weight_decay value: -1\.0"):
        opt.step(rng.standard_normal(5))
    assert_unchanged(opt, params, before)
    opt.param_groups[0]["weight_decay"] = 0
    opt.param_groups[0]["lr"] = float("nan")
    with pytest.raises(ValueError, match=r"Invalid learning rate: nan"):
        opt.step(rng.standard_normal(5))
    assert_unchanged(opt, params, before)


def test_lr_scale_must_be_finite_and_the_product_not_nan():
    with pytest.raises(ValueError, match=r"Invalid lr_scale value: inf"):
        fastopt.SGD(
            np.ones(4), lr=0.0, param_groups=[{"params": slice(0, 2), "lr_scale": float("inf")}]
        )
    p = np.ones(4)
    opt = fastopt.SGD(p, lr=float("inf"), param_groups=[{"params": slice(0, 2), "lr_scale": 0.0}])
    with pytest.raises(ValueError, match=r"x lr_scale 0\.0 is nan"):
        opt.step(np.ones(4))
    np.testing.assert_array_equal(p, 1.0)


def test_group_selectors():
    fp = fastopt.FlatParams({"a": np.zeros(2), "b": np.zeros(3)})
    with pytest.raises(ValueError, match=r"needs at least one array name"):
        fastopt.SGD(fp, param_groups=[{"params": []}])
    fp2 = fastopt.FlatParams([np.zeros(2), np.zeros(3)])
    opt = fastopt.SGD(fp2, param_groups=[{"params": np.int64(1), "lr": 0.5}])
    assert [(g["start"], g["stop"]) for g in opt.param_groups] == [(0, 2), (2, 5)]
