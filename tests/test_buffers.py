"""FlatParams: packing, views, groups, copies."""

import copy
import pickle

import numpy as np
import pytest

import fastopt


def make(rng, dtype=np.float32):
    return {
        "W1": rng.standard_normal((4, 3)).astype(dtype),
        "b1": np.arange(3, dtype=dtype),
        "scalar": np.array(2.5, dtype),
        "W2": rng.standard_normal((3, 2)).astype(dtype),
    }


def test_packs_once_and_gives_views_with_the_same_structure(rng):
    arrays = make(rng)
    fp = fastopt.FlatParams(arrays)
    assert fp.size == 12 + 3 + 1 + 6 and fp.dtype == np.float32 and len(fp) == 4
    assert list(fp.params) == list(arrays) and fp.names == tuple(arrays)
    for name, value in arrays.items():
        view = fp.params[name]
        assert view.shape == value.shape and np.shares_memory(view, fp.data)
        assert np.shares_memory(fp.grads[name], fp.grad)
        np.testing.assert_array_equal(view, value)
        assert not np.shares_memory(view, value)
    fp.params["b1"][1] = 42.0
    assert fp.data[fp.slices["b1"]][1] == 42.0
    fp.data[fp.slices["scalar"]] = -1.0
    assert fp["scalar"] == -1.0
    fp.grads["W2"][:] = 3.0
    assert fp.grad.sum() == 18.0
    fp.zero_grad()
    assert not fp.grad.any()


def test_list_input_gives_positional_views(rng):
    fp = fastopt.FlatParams([np.ones((2, 2)), np.zeros(3)])
    assert isinstance(fp.params, list) and fp.params[0].shape == (2, 2)
    assert fp.dtype == np.float64 and fp.size == 7


def test_groups_are_packed_contiguously(rng):
    fp = fastopt.FlatParams(make(rng), groups={"bias": ["b1", "scalar"]})
    assert fp.segments == {"bias": slice(0, 4), "default": slice(4, 22)}
    assert fp.segment("bias") == slice(0, 4)
    assert fp.segment(["W1", "W2"]) == slice(4, 22)
    np.testing.assert_array_equal(fp.params["b1"], [0, 1, 2])
    with pytest.raises(ValueError, match=r"not contiguous in the flat buffer"):
        fastopt.FlatParams(make(rng)).segment(["W1", "W2"])


def test_view_of_optimizer_state(rng):
    fp = fastopt.FlatParams(make(rng))
    opt = fastopt.Adam(fp)
    fp.grad[:] = 1.0
    opt.step()
    m = fp.view(opt.state["exp_avg"])
    assert m["W1"].shape == (4, 3) and np.shares_memory(m["W1"], opt.state["exp_avg"])
    np.testing.assert_allclose(m["W2"], 0.1)
    with pytest.raises(ValueError, match=r"view expects a 1-D array of shape \(22,\)"):
        fp.view(np.zeros(5))


@pytest.mark.parametrize(
    "arrays, kwargs, error, message",
    [
        ({}, {}, ValueError, r"empty parameter list"),
        ({"a": np.zeros(0)}, {}, ValueError, r"only empty arrays"),
        (
            {"a": np.zeros(2, np.float32), "b": np.zeros(2)},
            {},
            TypeError,
            r"one float dtype .* 'a': float32, 'b': float64; pass dtype=",
        ),
        ({"a": np.zeros(2, np.int32)}, {}, TypeError, r"one float dtype"),
        (
            {"a": np.zeros(2, np.complex128)},
            {"dtype": np.float64},
            TypeError,
            r"has dtype complex128",
        ),
        ({"a": np.zeros(2, np.float16)}, {}, TypeError, r"has dtype float16"),
        (
            {"a": np.zeros(2)},
            {"dtype": np.float16},
            TypeError,
            r"FlatParams dtype must be float32 or float64",
        ),
        ({"a": np.zeros(2)}, {"groups": {"g": ["zz"]}}, KeyError, r"unknown array 'zz'"),
        (
            {"a": np.zeros(2)},
            {"groups": {"g": ["a"], "h": ["a"]}},
            ValueError,
            r"more than one group",
        ),
        (np.zeros(3), {}, TypeError, r"expects a dict or a list of arrays, but got ndarray"),
    ],
)
def test_bad_input(arrays, kwargs, error, message):
    with pytest.raises(error, match=message):
        fastopt.FlatParams(arrays, **kwargs)


def test_explicit_dtype_converts(rng):
    fp = fastopt.FlatParams({"a": np.arange(3), "b": np.ones(2)}, dtype=np.float32)
    assert fp.dtype == np.float32
    np.testing.assert_array_equal(fp.params["a"], [0, 1, 2])


@pytest.mark.parametrize("clone", [copy.deepcopy, lambda x: pickle.loads(pickle.dumps(x))])
def test_copies_keep_views_into_their_own_buffers(clone, rng):
    fp = fastopt.FlatParams(make(rng), groups={"bias": ["b1"]})
    twin = clone(fp)
    assert np.shares_memory(twin.params["W1"], twin.data)
    assert np.shares_memory(twin.grads["W1"], twin.grad)
    assert not np.shares_memory(twin.data, fp.data)
    twin.params["W1"][:] = 0
    assert fp.params["W1"].any() and not twin.data[twin.slices["W1"]].any()
    assert twin.segments == fp.segments


def test_explicit_dtype_converts_float16():
    fp = fastopt.FlatParams([np.ones(2, np.float16)], dtype=np.float32)
    assert fp.dtype == np.float32 and fp.params[0].tolist() == [1.0, 1.0]


def test_an_optimizer_refuses_flat_params_whose_buffer_was_made_read_only():
    fp = fastopt.FlatParams({"w": np.ones(4)})
    fp.data.flags.writeable = False
    with pytest.raises(ValueError, match=r"params must be writeable"):
        fastopt.SGD(fp, lr=0.1)


def test_a_state_dict_taken_after_reshaping_the_buffer_in_place_loads():
    fp = fastopt.FlatParams({"w": np.arange(6.0)})
    fp.data.shape = (3, 2)  # the buffer array itself cannot be rebound, its shape can
    other = fastopt.FlatParams({"w": np.zeros(6)})
    other.load_state_dict(fp.state_dict())
    assert other.data.tolist() == list(range(6))


def test_group_members_may_be_numpy_integers():
    fp = fastopt.FlatParams([np.ones(2), np.ones(3)], groups={"g": np.int64(1)})
    opt = fastopt.SGD(fp, lr=0.1, param_groups=[{"params": "g", "lr": 0.5}])
    opt.step(np.ones(5))
    assert fp[0].tolist() == [0.9, 0.9] and fp[1].tolist() == [0.5, 0.5, 0.5]


def test_a_group_slice_past_the_end_is_refused():
    with pytest.raises(ValueError, match=r"slice\(2, 1000000, None\) reaches past the end of "
                                         r"the 4 parameters"):  # fmt: skip
        fastopt.SGD(np.ones(4), lr=0.1, param_groups=[{"params": slice(2, 10**6)}])
