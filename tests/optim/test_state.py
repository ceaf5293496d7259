"""Checkpoints: state_dict round trips, bit-exact resume, deepcopy and pickle."""

import copy
import pickle

import numpy as np
import pytest

import fastopt

from registry import CASE_IDS, CASES, gradients, lr_schedule, make


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, options", CASES, ids=CASE_IDS)
def test_resume_from_saved_file_is_bit_exact(name, options, dtype, rng, tmp_path):
    size = 1031
    grads = gradients(rng, size, dtype, 20)
    p0 = rng.standard_normal(size).astype(dtype)

    straight = p0.copy()
    opt = make(name, straight, lr=lr_schedule, **options)
    for g in grads:
        opt.step(g)

    first = p0.copy()
    opt1 = make(name, first, lr=lr_schedule, **options)
    for g in grads[:9]:
        opt1.step(g)
    np.savez(tmp_path / "ckpt.npz", params=first, **opt1.state_dict())

    with np.load(tmp_path / "ckpt.npz") as saved:
        resumed = saved["params"].copy()
        opt2 = make(name, resumed, lr=lr_schedule, **options)
        opt2.load_state_dict({k: saved[k] for k in saved.files if k != "params"})
    assert opt2.step_count == 9
    for g in grads[9:]:
        opt2.step(g)
    assert resumed.tobytes() == straight.tobytes()
    for key in opt.state:
        assert np.asarray(opt2.state[key]).tobytes() == np.asarray(opt.state[key]).tobytes()


def test_state_dict_is_a_copy_and_plain(rng):
    p = rng.standard_normal(10)
    opt = fastopt.Adam(p, amsgrad=True)
    opt.step(rng.standard_normal(10))
    sd = opt.state_dict()
    assert sd["algorithm"] == "Adam" and sd["step"] == 1 and sd["size"] == 10
    assert sorted(k for k, v in sd.items() if isinstance(v, np.ndarray)) == [
        "exp_avg",
        "exp_avg_sq",
        "group_bounds",
        "max_exp_avg_sq",
    ]
    sd["exp_avg"][:] = 99.0
    assert not np.any(opt.state["exp_avg"] == 99.0)


def test_load_casts_float64_state_into_float32_optimizer(rng):
    p64 = rng.standard_normal(6)
    opt64 = fastopt.RMSprop(p64, centered=True)
    opt64.step(rng.standard_normal(6))
    p32 = p64.astype(np.float32)
    opt32 = fastopt.RMSprop(p32, centered=True)
    opt32.load_state_dict(opt64.state_dict() | {"dtype": "float32"})
    np.testing.assert_array_equal(
        opt32.state["square_avg"], opt64.state["square_avg"].astype(np.float32)
    )
    assert opt32.state["square_avg"].dtype == np.float32


def load_errors():
    base = fastopt.Adam(np.zeros(8)).state_dict()
    return [
        (fastopt.Adagrad(np.zeros(8)).state_dict(), r"expects keys"),
        (
            base | {"algorithm": "AdamW"},
            r"state_dict is from an optimizer of type AdamW, but this optimizer is Adam",
        ),
        (
            fastopt.Adam(np.zeros(9)).state_dict(),
            r"state_dict is for 9 parameters, but this optimizer has 8",
        ),
        (
            fastopt.Adam(np.zeros(8), amsgrad=True).state_dict(),
            r"expects keys .* but got .*max_exp_avg_sq",
        ),
        (
            base | {"exp_avg": np.zeros(7)},
            r"state_dict\['exp_avg'\] expects a float array of shape \(8,\)",
        ),
        (
            base | {"exp_avg": np.zeros(8, np.int64)},
            r"expects a float array of shape \(8,\) but got int64",
        ),
        (base | {"step": -1}, r"Invalid step in state_dict: -1"),
        (base | {"step": 1.5}, r"Invalid step in state_dict"),
        (
            base | {"group_bounds": np.array([[0, 4], [4, 8]])},
            r"parameter groups \[\[0, 4\], \[4, 8\]\]",
        ),
    ]


@pytest.mark.parametrize("index", range(9))
def test_bad_state_dict_changes_nothing(index, rng):
    bad, message = load_errors()[index]
    p = rng.standard_normal(8)
    opt = fastopt.Adam(p)
    opt.step(rng.standard_normal(8))
    before = {k: np.copy(v) for k, v in opt.state.items()}
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(bad)
    for key, value in before.items():
        assert np.asarray(opt.state[key]).tobytes() == value.tobytes()


@pytest.mark.parametrize(
    "clone", [copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o))], ids=["deepcopy", "pickle"]
)
def test_copies_are_independent_and_continue_identically(clone, rng):
    fp = fastopt.FlatParams(
        {"W": rng.standard_normal((40, 30)), "b": np.zeros(30)}, groups={"bias": ["b"]}
    )
    opt = fastopt.AdamW(
        fp, lr=0.01, param_groups=[{"params": "bias", "weight_decay": 0.0}], max_grad_norm=5.0
    )
    fp.grad[:] = rng.standard_normal(fp.size)
    opt.step()
    twin = clone(opt)
    twin_fp = twin.params
    assert twin_fp is not fp and np.shares_memory(twin_fp.params["W"], twin.param)
    assert twin.param_groups == opt.param_groups and twin.state["step"] == 1
    for _ in range(3):
        g = rng.standard_normal(fp.size)
        fp.grad[:] = g
        twin_fp.grad[:] = g
        opt.step()
        twin.step()
    assert twin_fp.data.tobytes() == fp.data.tobytes()
    twin.step()
    assert twin_fp.data.tobytes() != fp.data.tobytes()


@pytest.mark.parametrize(
    "clone", [copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o))], ids=["deepcopy", "pickle"]
)
def test_copy_of_a_plain_array_optimizer_updates_the_copied_array(clone):
    w = np.ones((2, 3))
    w2, opt2 = clone((w, fastopt.SGD(w, lr=0.1)))
    opt2.step(np.ones((2, 3)))
    np.testing.assert_allclose(w2, 0.9)
    np.testing.assert_array_equal(w, 1.0)


def test_state_dict_with_a_bad_dtype_is_rejected():
    opt = fastopt.Adam(np.zeros(4))
    with pytest.raises(ValueError, match=r"state_dict has dtype 'garbage'"):
        opt.load_state_dict(opt.state_dict() | {"dtype": "garbage"})
