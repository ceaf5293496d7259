"""Checkpoints: FlatParams.state_dict, the hyperparameters in the optimizer's state_dict,
save_checkpoint / load_checkpoint (one file, atomic, bit-exact resume), last_lr / last_lrs
and the optimizer repr.
"""

import json
import os

import numpy as np
import pytest
from state_helpers import through_npz

import fastopt
from fastopt import schedules as S


def snapshot(fp, opt):
    return fp.data.tobytes(), {k: np.asarray(v).tobytes() for k, v in opt.state.items()}


def packed(rng, dtype=np.float64, **kwargs):
    return fastopt.FlatParams(
        {
            "W": rng.standard_normal((4, 3)).astype(dtype),
            "b": rng.standard_normal(3).astype(dtype),
            "s": np.asarray(rng.standard_normal(), dtype),
        },
        **kwargs,
    )


# -- FlatParams.state_dict ---------------------------------------------------------------


@pytest.mark.parametrize("keyed", [True, False])
def test_flatparams_state_dict_round_trips_through_npz(keyed, rng):
    arrays = [rng.standard_normal((2, 3)), rng.standard_normal(4), np.float64(1.5)]
    source = fastopt.FlatParams(dict(zip("abc", arrays)) if keyed else arrays)
    sd = source.state_dict()
    assert sorted(sd) == ["data", "dtype", "names", "offsets", "shapes"]
    assert json.loads(sd["shapes"]) == [[2, 3], [4], []] and sd["dtype"] == "float64"
    assert sd["names"].tolist() == (list("abc") if keyed else [0, 1, 2])
    sd["data"][0] += 1.0  # a copy
    assert source.data[0] != sd["data"][0]

    target = fastopt.FlatParams({k: np.zeros_like(v) for k, v in zip("abc", arrays)} if keyed
                                else [np.zeros_like(v) for v in arrays])  # fmt: skip
    target.grad[:] = 7.0
    target.load_state_dict(through_npz(source.state_dict()))
    assert target.data.tobytes() == source.data.tobytes()
    assert np.all(target.grad == 7.0)  # gradients are not part of the state


def test_flatparams_loads_by_name_into_another_packing(rng):
    source = packed(rng)
    target = packed(np.random.default_rng(0), groups={"bias": ["b", "s"]})
    assert target.slices != source.slices
    target.load_state_dict(source.state_dict())
    for name in source.names:
        assert target.params[name].tobytes() == source.params[name].tobytes()


def test_flatparams_load_converts_the_dtype_and_refuses_an_overflow(rng):
    source = packed(rng)
    target = packed(rng, dtype=np.float32)
    target.load_state_dict(source.state_dict())
    assert target.data.tobytes() == source.data.astype(np.float32).tobytes()
    before = target.data.tobytes()
    huge = dict(source.state_dict())
    huge["data"] = huge["data"].copy()
    huge["data"][3] = 1e300
    with pytest.raises(ValueError, match=r"beyond the range of this FlatParams' float32"):
        target.load_state_dict(huge)
    assert target.data.tobytes() == before


def _bad_flat_state_dicts(sd):
    data = sd["data"]
    return {
        "missing key": ({k: v for k, v in sd.items() if k != "offsets"}, r"expects keys"),
        "unknown name": (
            sd | {"names": np.array(["W", "b", "t"])},
            r"holds arrays \['W', 'b', 't'\].*missing \['s'\], unexpected \['t'\]",
        ),
        "shape": (
            sd | {"shapes": "[[3, 4], [3], []]"},
            r"other shapes: 'W': saved \(3, 4\), this FlatParams has \(4, 3\)",
        ),
        "shapes not JSON": (sd | {"shapes": "[[4, 3"}, r"'shapes'\] is not valid JSON"),
        "shapes count": (sd | {"shapes": "[[4, 3]]"}, r"must list 3 shapes"),
        "int data": (sd | {"data": data.astype(np.int64)}, r"1-D float array"),
        "short data": (sd | {"data": data[:-1]}, r"has 15 elements, but .* add up to 16"),
        "dtype": (sd | {"dtype": "float16"}, r"has dtype 'float16'"),
        "dtype disagrees": (sd | {"dtype": "float32"}, r"is float64, but .*says float32"),
        "offsets overlap": (sd | {"offsets": np.array([0, 2, 15])}, r"'offsets'\] overlap"),
        "offsets outside": (sd | {"offsets": np.array([0, 12, 16])}, r"fall outside"),
        "repeated name": (sd | {"names": np.array(["W", "b", "b"])}, r"repeats a name"),
    }


BAD_FLAT = list(_bad_flat_state_dicts(packed(np.random.default_rng(1)).state_dict()))


@pytest.mark.parametrize("case", BAD_FLAT)
def test_a_bad_flatparams_state_dict_changes_nothing(case, rng):
    fp = packed(rng)
    bad, message = _bad_flat_state_dicts(packed(np.random.default_rng(2)).state_dict())[case]
    before = fp.data.tobytes()
    with pytest.raises(ValueError, match=message):
        fp.load_state_dict(bad)
    assert fp.data.tobytes() == before


def test_flatparams_state_dict_needs_names_that_survive_savez():
    fp = fastopt.FlatParams({"a": np.zeros(2), 1: np.zeros(2)})
    with pytest.raises(TypeError, match=r"all strings or all integers"):
        fp.state_dict()


# -- hyperparameters in the optimizer's state_dict -----------------------------------------


def adam(p, **options):
    kwargs = {"lr": S.cosine_decay(0.01, 100), "betas": (0.9, 0.999)} | options
    return fastopt.Adam(p, **kwargs)


def stepped(opt, p, steps=3):
    rng = np.random.default_rng(7)
    for _ in range(steps):
        opt.step(rng.standard_normal(p.shape))
    return opt


def test_the_issue_example_raises_and_loads_with_strict_false(rng):
    p = rng.standard_normal(6)
    sd = stepped(adam(p), p).state_dict()
    q = p.copy()
    other = fastopt.Adam(q, lr=5.0, betas=(0.5, 0.6))
    before = {k: np.asarray(v).tobytes() for k, v in other.state.items()}
    with pytest.raises(ValueError) as error:
        other.load_state_dict(through_npz(sd))
    message = str(error.value)
    assert "betas: saved (0.9, 0.999), current (0.5, 0.6)" in message
    assert (
        "param_groups[0] ('default') lr: saved cosine_decay(lr=0.01, decay_steps=100, "
        "end_lr=0.0), current 5.0" in message
    )
    assert "strict=False" in message
    assert {k: np.asarray(v).tobytes() for k, v in other.state.items()} == before
    other.load_state_dict(through_npz(sd), strict=False)
    assert other.step_count == 3 and other.betas == (0.5, 0.6)
    assert other.param_groups[0]["lr"] == 5.0
    assert other.state["exp_avg"].tobytes() == sd["exp_avg"].tobytes()


DIFFERENT = {
    "eps": ({}, {"eps": 1e-6}, r"eps: saved 1e-08, current 1e-06"),
    "weight_decay": ({}, {"weight_decay": 0.1}, r"weight_decay: saved 0.0, current 0.1"),
    "max_grad_norm": ({"max_grad_norm": 1.0}, {}, r"max_grad_norm: saved 1.0, current None"),
    "skip_nonfinite": ({}, {"skip_nonfinite": True}, r"skip_nonfinite: saved False, current True"),
    "maximize": ({}, {"maximize": True}, r"maximize: saved False, current True"),
    "schedule": (
        {},
        {"lr": S.cosine_decay(0.01, 200)},
        r"lr: saved cosine_decay\(lr=0.01, decay_steps=100.*current cosine_decay\(lr=0.01, "
        r"decay_steps=200",
    ),
    "schedule or float": ({}, {"lr": 0.01}, r"lr: saved cosine_decay\(.*current 0.01"),
    "group lr_scale": (
        {"param_groups": [{"params": slice(0, 2), "lr_scale": 0.5}]},
        {"param_groups": [{"params": slice(0, 2), "lr_scale": 0.25}]},
        r"param_groups\[0\] \(slice\(0, 2\)\) lr_scale: saved 0.5, current 0.25",
    ),
    "group weight_decay": (
        {"param_groups": [{"params": slice(0, 2), "weight_decay": 0.0}]},
        {"param_groups": [{"params": slice(0, 2), "weight_decay": 0.1}]},
        r"param_groups\[0\] .*weight_decay: saved 0.0, current 0.1",
    ),
    "group lr": (
        {"param_groups": [{"params": slice(4, 6), "lr": 0.5}]},
        {"param_groups": [{"params": slice(4, 6), "lr": 0.25}]},
        r"param_groups\[1\] \(slice\(4, 6\)\) lr: saved 0.5, current 0.25",
    ),
    "a lambda or a schedule": ({"lr": lambda t: 0.01}, {}, r"lr: saved <function .*<lambda>>"),
}


@pytest.mark.parametrize("case", list(DIFFERENT))
def test_other_hyperparameters_raise_unless_strict_false(case, rng):
    saved_options, current_options, message = DIFFERENT[case]
    p = rng.standard_normal(6)
    source = stepped(adam(p, **saved_options), p)
    sd = through_npz(source.state_dict())
    q = p.copy()
    target = adam(q, **current_options)
    with pytest.raises(ValueError, match=message):
        target.load_state_dict(sd)
    assert target.step_count == 0 and not target.state["exp_avg"].any()
    target.load_state_dict(sd, strict=False)
    assert target.step_count == 3
    assert target.state["exp_avg"].tobytes() == source.state["exp_avg"].tobytes()


def test_equal_hyperparameters_load_strictly_whatever_their_spelling(rng):
    p = rng.standard_normal(6)
    sd = stepped(fastopt.Adam(p, weight_decay=0, betas=[0.9, 0.999]), p).state_dict()
    target = fastopt.Adam(p.copy(), weight_decay=0.0, betas=(np.float64(0.9), 0.999))
    target.load_state_dict(through_npz(sd))
    assert target.step_count == 3


def named_schedule(t):
    return 0.01 / (1 + t)


def test_callables_compare_by_their_repr_without_addresses(rng):
    p = rng.standard_normal(4)
    sd = through_npz(stepped(fastopt.SGD(p, lr=lambda t: 0.1), p).state_dict())
    record = json.loads(str(sd["hyperparameters"]))
    assert record["groups"][0]["lr"] == {"callable": "<function " + _lambda_qualname() + ">"}
    # loosely: any lambda defined at the same place compares equal ...
    fastopt.SGD(p.copy(), lr=lambda t: 0.5).load_state_dict(sd)
    # ... a named function does not
    with pytest.raises(ValueError, match=r"lr: saved <function .*<lambda>>, current <function "):
        fastopt.SGD(p.copy(), lr=named_schedule).load_state_dict(sd)
    sd = stepped(fastopt.SGD(p, lr=named_schedule), p).state_dict()
    fastopt.SGD(p.copy(), lr=named_schedule).load_state_dict(through_npz(sd))


def _lambda_qualname():
    return "test_callables_compare_by_their_repr_without_addresses.<locals>.<lambda>"


def test_a_state_dict_without_hyperparameters_loads_only_with_strict_false(rng):
    p = rng.standard_normal(5)
    old = stepped(fastopt.Adagrad(p, lr=0.1), p).state_dict()
    del old["hyperparameters"]
    target = fastopt.Adagrad(p.copy(), lr=0.1)
    with pytest.raises(ValueError, match=r"no 'hyperparameters' entry .* pass strict=False"):
        target.load_state_dict(old)
    assert target.step_count == 0
    target.load_state_dict(through_npz(old), strict=False)
    assert target.step_count == 3


@pytest.mark.parametrize(
    "entry, message",
    [
        ("{not json", r"is not valid JSON"),
        (json.dumps({"version": 99}), r"written by a newer fastopt"),
        (json.dumps({"version": 1, "groups": []}), r"malformed: missing"),
        (np.array([1, 2]), r"must be a JSON text"),
    ],
)
@pytest.mark.parametrize("strict", [True, False])
def test_a_malformed_hyperparameters_entry_raises_and_changes_nothing(entry, message, strict):
    p = np.linspace(-1, 1, 5)
    sd = stepped(fastopt.SGD(p, lr=0.1, momentum=0.9), p).state_dict()
    target = fastopt.SGD(p.copy(), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=message):
        target.load_state_dict(sd | {"hyperparameters": entry}, strict=strict)
    assert target.step_count == 0 and not target.state["momentum_buffer"].any()


def test_strict_must_be_a_flag(rng):
    opt = fastopt.SGD(rng.standard_normal(3), lr=0.1)
    with pytest.raises(TypeError, match=r"Invalid strict: 'no'"):
        opt.load_state_dict(opt.state_dict(), strict="no")


def test_an_edited_group_value_is_part_of_the_checkpoint(rng):
    p = rng.standard_normal(6)
    source = stepped(fastopt.SGD(p, lr=0.1, momentum=0.9), p)
    source.param_groups[0]["lr"] = 0.01  # a manual decay
    sd = source.state_dict()
    target = fastopt.SGD(p.copy(), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"param_groups\[0\] \('default'\) lr: saved 0.01"):
        target.load_state_dict(sd)
    target.param_groups[0]["lr"] = 0.01
    target.load_state_dict(sd)
    assert target.step_count == 3


def test_a_stateful_schedule_gets_its_state_back(rng):
    p = rng.standard_normal(4)
    plateau = S.reduce_on_plateau(0.1, patience=0, factor=0.5)
    source = stepped(fastopt.SGD(p, lr=plateau), p)
    for cost in (3.0, 4.0, 5.0):
        plateau.step(cost)
    assert plateau.current_lr == 0.025
    sd = through_npz(source.state_dict())
    fresh = S.reduce_on_plateau(0.1, patience=0, factor=0.5)
    target = fastopt.SGD(p.copy(), lr=fresh)
    target.load_state_dict(sd)  # the state differs, the schedule does not
    assert fresh.state_dict() == plateau.state_dict()
    # another plateau schedule: strict raises; strict=False keeps it as it is
    other = S.reduce_on_plateau(0.1, patience=3)
    with pytest.raises(ValueError, match=r"lr: saved reduce_on_plateau\(lr=0.1"):
        fastopt.SGD(p.copy(), lr=other).load_state_dict(sd)
    fastopt.SGD(p.copy(), lr=other).load_state_dict(sd, strict=False)
    assert other.current_lr == 0.1 and other.num_steps == 0


def test_a_bad_schedule_state_raises_before_anything_is_written(rng):
    p = rng.standard_normal(4)
    plateau = S.reduce_on_plateau(0.1)
    sd = stepped(fastopt.SGD(p, lr=plateau), p).state_dict()
    record = json.loads(sd["hyperparameters"])
    record["groups"][0]["lr"]["schedule"]["state"] = {"current_lr": 1.0}
    fresh = S.reduce_on_plateau(0.1)
    target = fastopt.SGD(p.copy(), lr=fresh)
    with pytest.raises(ValueError, match=r"invalid schedule state for param_groups\[0\]"):
        target.load_state_dict(sd | {"hyperparameters": json.dumps(record)})
    assert target.step_count == 0 and fresh.num_steps == 0


def test_a_shard_records_its_own_groups_and_compares_by_source(rng):
    """As DataParallel(zero=True) uses it: a shard's state_dict with the full size and
    layout loads into the full optimizer, and the full one into a shard.
    """
    groups = [{"params": slice(0, 4), "lr": 0.5}, {"params": slice(8, 10), "weight_decay": 0.0}]
    p = rng.standard_normal(10)
    full = stepped(fastopt.SGD(p, lr=0.1, momentum=0.9, param_groups=groups), p)
    shard = full.shard(6, 10)  # holds the default group [4, 8) and the last one
    assert shard.group_sources == [1, 2]
    local = shard.state_dict()
    assert json.loads(local["hyperparameters"])["partial"]
    gathered = dict(local, size=10, group_bounds=full.state_dict()["group_bounds"])
    for name in ("momentum_buffer",):
        gathered[name] = full.state[name].copy()
    target = fastopt.SGD(p.copy(), lr=0.1, momentum=0.9, param_groups=groups)
    target.load_state_dict(through_npz(gathered))
    assert target.step_count == 3
    changed = [groups[0], dict(groups[1], weight_decay=0.1)]
    with pytest.raises(ValueError, match=r"param_groups\[2\] \(slice\(8, 10\)\) weight_decay"):
        fastopt.SGD(p.copy(), lr=0.1, momentum=0.9, param_groups=changed).load_state_dict(gathered)
    # the full state into a shard: its groups are compared with the ones they came from
    sd = full.state_dict()
    sliced = dict(sd, size=4, group_bounds=np.array([[0, 2], [2, 4]]))
    sliced["momentum_buffer"] = sd["momentum_buffer"][6:]
    other = fastopt.SGD(p.copy(), lr=0.1, momentum=0.9, param_groups=changed).shard(6, 10)
    with pytest.raises(ValueError, match=r"param_groups\[2\] .*weight_decay: saved 0.0"):
        other.load_state_dict(sliced)
    twin = fastopt.SGD(p.copy(), lr=0.1, momentum=0.9, param_groups=groups).shard(6, 10)
    twin.load_state_dict(sliced)
    assert twin.state["momentum_buffer"].tobytes() == shard.state["momentum_buffer"].tobytes()


# -- save_checkpoint / load_checkpoint ----------------------------------------------------


def quadratic_grad(x, step):
    """A gradient that depends on the parameters and on the step (deterministic noise)."""
    noise = np.random.default_rng(1000 + step).standard_normal(x.size).reshape(x.shape)
    return (0.3 * x + noise).astype(x.dtype)


def adam_run(dtype):
    p = np.linspace(-1.0, 1.0, 37, dtype=dtype).reshape(37, 1)
    lr = S.warmup_cosine_decay(0.05, warmup_steps=4, total_steps=30, end_lr=0.001)
    opt = fastopt.Adam(p, lr=lr, amsgrad=True, max_grad_norm=2.0)

    def step(t):
        opt.step(quadratic_grad(p, t))

    return p, opt, step


def sgd_run(dtype):
    rng = np.random.default_rng(3)
    fp = fastopt.FlatParams(
        {"W": rng.standard_normal((6, 5)), "b": np.zeros(5), "head": rng.standard_normal(4)},
        dtype=dtype,
        groups={"no_decay": ["b"], "head": ["head"]},
    )
    groups = [
        {"params": "no_decay", "weight_decay": 0.0},
        {"params": "head", "lr": S.step_decay(0.2, 5, 0.5), "lr_scale": 0.5},
    ]
    opt = fastopt.SGD(fp, lr=0.05, momentum=0.9, weight_decay=0.01, param_groups=groups)

    def step(t):
        fp.grad[:] = quadratic_grad(fp.data, t)
        opt.step()

    return fp, opt, step


def state_bytes(params, opt):
    data = params.data if isinstance(params, fastopt.FlatParams) else params
    return data.tobytes(), {k: np.asarray(v).tobytes() for k, v in opt.state.items()}


@pytest.mark.parametrize("run", [adam_run, sgd_run], ids=["Adam-schedule", "SGD-FlatParams"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resume_from_a_checkpoint_is_bit_exact(run, dtype, tmp_path):
    path = tmp_path / "run.ckpt"
    params, opt, step = run(dtype)
    for t in range(10):
        step(t)
    fastopt.save_checkpoint(path, params, opt, epoch=10, losses=[0.5, 0.25])
    for t in range(10, 20):
        step(t)
    straight = state_bytes(params, opt)

    params2, opt2, step2 = run(dtype)
    extra = fastopt.load_checkpoint(path, params2, opt2)
    assert extra == {"epoch": 10, "losses": [0.5, 0.25]}
    assert opt2.step_count == 10
    for t in range(10, 20):
        step2(t)
    assert state_bytes(params2, opt2) == straight
    assert opt2.last_lrs == opt.last_lrs


def test_the_file_is_one_npz_without_pickles_at_the_path_given(tmp_path, rng):
    fp = packed(rng)
    opt = fastopt.AdamW(fp, lr=S.cosine_decay(0.01, 50))
    fastopt.save_checkpoint(tmp_path / "ckpt", fp, opt, seed=np.int64(5), table=np.eye(2))
    assert os.listdir(tmp_path) == ["ckpt"]
    with np.load(tmp_path / "ckpt", allow_pickle=False) as saved:
        files = set(saved.files)
        manifest = json.loads(str(saved["checkpoint"]))
        hyper = json.loads(str(saved["optimizer.hyperparameters"]))
        data = saved["params.data"]
    assert {"params.names", "params.shapes", "optimizer.exp_avg", "extra.table"} <= files
    assert manifest["format"] == "fastopt-checkpoint" and manifest["params"] == "FlatParams"
    assert manifest["extra_arrays"] == ["seed", "table"] and manifest["extra_scalars"] == ["seed"]
    assert hyper["groups"][0]["lr"] == {"schedule": S.cosine_decay(0.01, 50).to_dict()}
    assert data.tobytes() == fp.data.tobytes()


def test_extra_values_come_back_as_saved(tmp_path, rng):
    p = rng.standard_normal(3)
    opt = fastopt.SGD(p, lr=0.1)
    state = np.random.default_rng(9).bit_generator.state
    fastopt.save_checkpoint(
        tmp_path / "c", p, opt, rng=state, step=np.int32(4), mask=np.array([True, False]),
        note="ok", ratio=float("inf"), pair=(1, 2), nothing=None,
    )  # fmt: skip
    extra = fastopt.load_checkpoint(tmp_path / "c", p, opt)
    assert extra["rng"] == state and extra["note"] == "ok" and extra["nothing"] is None
    assert extra["ratio"] == float("inf") and extra["pair"] == [1, 2]
    assert type(extra["step"]) is np.int32 and extra["step"] == 4
    assert extra["mask"].tolist() == [True, False]
    generator = np.random.default_rng()
    generator.bit_generator.state = extra["rng"]
    assert generator.random() == np.random.default_rng(9).random()


@pytest.mark.parametrize(
    "value, message",
    [
        ({1, 2}, r"extra value 'bad' is a set"),
        ({"a": [1, np.float32(2)]}, r"extra value 'bad'\['a'\]\[1\] is a float32"),
        ({1: "one"}, r"extra value 'bad' has the key 1"),
        (np.array([object()]), r"object array"),
        (np.ma.masked_array([1.0]), r"ndarray subclass"),
    ],
)
def test_bad_extra_values_raise_before_any_file_is_written(value, message, tmp_path, rng):
    p = rng.standard_normal(3)
    with pytest.raises(TypeError, match=message):
        fastopt.save_checkpoint(tmp_path / "c", p, fastopt.SGD(p, lr=0.1), bad=value)
    assert os.listdir(tmp_path) == []


def test_a_crash_mid_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch, rng):
    fp = packed(rng)
    opt = fastopt.Adam(fp, lr=0.01)
    path = tmp_path / "run.ckpt"
    fastopt.save_checkpoint(path, fp, opt, epoch=1)
    old = path.read_bytes()

    import numpy.lib.format

    write_array, calls = numpy.lib.format.write_array, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # after some entries went into the temporary file
            raise OSError("disk full")
        return write_array(*args, **kwargs)

    monkeypatch.setattr(numpy.lib.format, "write_array", failing)
    fp.grad[:] = 1.0
    opt.step()
    with pytest.raises(OSError, match="disk full"):
        fastopt.save_checkpoint(path, fp, opt, epoch=2)
    assert len(calls) == 4
    assert os.listdir(tmp_path) == ["run.ckpt"] and path.read_bytes() == old
    calls.clear()
    with pytest.raises(OSError, match="disk full"):
        fastopt.save_checkpoint(tmp_path / "new.ckpt", fp, opt)
    assert os.listdir(tmp_path) == ["run.ckpt"]
    monkeypatch.undo()
    fresh = packed(np.random.default_rng(0))
    assert fastopt.load_checkpoint(path, fresh, fastopt.Adam(fresh, lr=0.01)) == {"epoch": 1}


def test_a_load_that_raises_leaves_params_and_optimizer_unchanged(tmp_path, rng):
    fp = packed(rng)
    source = fastopt.Adam(fp, lr=0.01, betas=(0.8, 0.9))
    fp.grad[:] = 1.0
    source.step()
    fastopt.save_checkpoint(tmp_path / "c", fp, source)

    target_fp = packed(np.random.default_rng(5))
    target = fastopt.Adam(target_fp, lr=0.01)  # other betas: the optimizer part fails
    before = snapshot(target_fp, target)
    with pytest.raises(ValueError, match=r"betas: saved \(0.8, 0.9\), current \(0.9, 0.999\)"):
        fastopt.load_checkpoint(tmp_path / "c", target_fp, target)
    assert snapshot(target_fp, target) == before
    fastopt.load_checkpoint(tmp_path / "c", target_fp, target, strict=False)
    assert snapshot(target_fp, target) == snapshot(fp, source)

    # the parameters part fails (another shape): the optimizer is not loaded either
    other_fp = fastopt.FlatParams({"W": np.zeros((3, 4)), "b": np.zeros(3), "s": np.zeros(())})
    other = fastopt.Adam(other_fp, lr=0.01, betas=(0.8, 0.9))
    before = snapshot(other_fp, other)
    with pytest.raises(ValueError, match=r"'W': saved \(4, 3\), this FlatParams has \(3, 4\)"):
        fastopt.load_checkpoint(tmp_path / "c", other_fp, other)
    assert snapshot(other_fp, other) == before


def test_load_checkpoint_needs_the_saved_packing(tmp_path, rng):
    fp = packed(rng)
    opt = fastopt.SGD(fp, lr=0.1, momentum=0.9)
    fastopt.save_checkpoint(tmp_path / "c", fp, opt)
    repacked = fastopt.FlatParams({"s": np.zeros(()), "W": np.zeros((4, 3)), "b": np.zeros(3)})
    with pytest.raises(ValueError, match=r"packs its arrays as \['W', 'b', 's'\].*\['s', 'W'"):
        fastopt.load_checkpoint(
            tmp_path / "c", repacked, fastopt.SGD(repacked, lr=0.1, momentum=0.9)
        )


def test_params_must_be_what_the_optimizer_updates(tmp_path, rng):
    fp = packed(rng)
    opt = fastopt.SGD(fp, lr=0.1)
    with pytest.raises(ValueError, match=r"params \(FlatParams\) is not what the optimizer"):
        fastopt.save_checkpoint(tmp_path / "c", packed(rng), opt)
    with pytest.raises(TypeError, match=r"optimizer must be a fastopt optimizer"):
        fastopt.save_checkpoint(tmp_path / "c", fp, object())
    fastopt.save_checkpoint(tmp_path / "c", fp, opt)
    p = rng.standard_normal(fp.size)
    with pytest.raises(ValueError, match=r"saved from a FlatParams, but params is a ndarray"):
        fastopt.load_checkpoint(tmp_path / "c", p, fastopt.SGD(p, lr=0.1))
    w = rng.standard_normal((2, 8))
    fastopt.save_checkpoint(tmp_path / "w", w, fastopt.SGD(w, lr=0.1))
    v = np.zeros((8, 2))
    with pytest.raises(
        ValueError, match=r"float array of shape \(8, 2\), but got float64 \(2, 8\)"
    ):
        fastopt.load_checkpoint(tmp_path / "w", v, fastopt.SGD(v, lr=0.1))
    assert not v.any()


def test_files_that_are_not_checkpoints_are_refused(tmp_path, rng):
    p = rng.standard_normal(3)
    opt = fastopt.SGD(p, lr=0.1)
    np.savez(tmp_path / "plain.npz", **opt.state_dict())
    (tmp_path / "text").write_text("hello")
    np.save(tmp_path / "one.npy", p)
    for name, message in [
        ("plain.npz", r"not a fastopt checkpoint \(no 'checkpoint' entry\)"),
        ("text", r"not a fastopt checkpoint"),
        ("one.npy", r"a single .npy array"),
    ]:
        with pytest.raises(ValueError, match=message):
            fastopt.load_checkpoint(tmp_path / name, p, opt)
    with pytest.raises(FileNotFoundError):
        fastopt.load_checkpoint(tmp_path / "missing", p, opt)


def test_the_checkpoint_functions_are_exported():
    assert {"save_checkpoint", "load_checkpoint"} <= set(fastopt.__all__)


# -- last_lr and last_lrs -----------------------------------------------------------------


def test_last_lr_is_a_float_with_the_readme_groups(rng):
    fp = fastopt.FlatParams(
        {"W1": rng.standard_normal((5, 4)), "b1": np.zeros(4), "b2": np.zeros(2)},
        groups={"no_decay": ["b1", "b2"]},
    )
    schedule = S.cosine_decay(1e-2, 100)
    opt = fastopt.AdamW(fp, lr=schedule, param_groups=[{"params": "no_decay", "weight_decay": 0.0}])
    assert opt.last_lr is None and opt.last_lrs is None
    for k in range(3):
        fp.grad[:] = 1.0
        opt.step()
        assert type(opt.last_lr) is float and opt.last_lr == schedule(k)
        assert opt.last_lrs == [schedule(k), schedule(k)]
    assert f"{opt.last_lr:.2e}" == f"{schedule(2):.2e}"


def test_last_lr_is_the_default_groups_entry_wherever_it_is(rng):
    schedule = S.warmup_cosine_decay(0.1, 5, 40, end_lr=0.001)
    p = rng.standard_normal(50)
    opt = fastopt.SGD(p, lr=schedule, param_groups=[{"params": slice(0, 10), "lr_scale": 0.5}])
    for k in range(7):
        opt.step(rng.standard_normal(50))
        assert opt.last_lr == schedule(k)
        assert opt.last_lrs == [schedule(k) * 0.5, schedule(k)]
    # every element in an explicit group: the first group's
    both = [{"params": slice(0, 10), "lr": 0.3}, {"params": slice(10, 50), "lr": 0.2}]
    opt = fastopt.SGD(rng.standard_normal(50), lr=0.1, param_groups=both)
    opt.step(rng.standard_normal(50))
    assert opt.last_lr == 0.3 and opt.last_lrs == [0.3, 0.2]


def test_last_lrs_with_one_group_and_after_a_skipped_step(rng):
    opt = fastopt.Adam(rng.standard_normal(4), lr=lambda t: 0.1 / (t + 1), skip_nonfinite=True)
    opt.step(np.ones(4))
    assert opt.last_lr == 0.1 and opt.last_lrs == [0.1]
    opt.last_lrs.append(5.0)  # a new list each time: nothing to corrupt
    assert opt.last_lrs == [0.1]
    assert not opt.step(np.full(4, np.nan))
    assert opt.last_lr == 0.1 and opt.last_lrs == [0.1]  # the last update's
    plain = fastopt.SGD(rng.standard_normal(4), lr=0.2)
    plain.step(np.ones(4))
    assert plain.last_lr == 0.2 and plain.last_lrs == [0.2]


# -- repr --------------------------------------------------------------------------------


def test_repr_shows_clipping_skipping_and_groups_when_set(rng):
    fp = fastopt.FlatParams(
        {"W": rng.standard_normal((3, 2)), "b": np.zeros(2)}, groups={"no_decay": ["b"]}
    )
    text = repr(
        fastopt.AdamW(
            fp,
            lr=0.01,
            param_groups=[{"params": "no_decay", "weight_decay": 0.0}],
            max_grad_norm=1.0,
            skip_nonfinite=True,
        )
    )
    assert "\n" not in text and text.startswith("AdamW(size=8, dtype=float64, lr=0.01, ")
    assert "max_grad_norm=1.0, skip_nonfinite=True" in text
    assert text.endswith("param_groups=[{'params': 'no_decay', 'weight_decay': 0.0}])")
    plain = repr(fastopt.SGD(rng.standard_normal(3), lr=0.1))
    for absent in ("max_grad_norm", "skip_nonfinite", "param_groups"):
        assert absent not in plain
    many = [{"params": slice(i, i + 1), "lr": 0.1 * (i + 1)} for i in range(5)]
    text = repr(fastopt.SGD(rng.standard_normal(8), lr=0.1, param_groups=many))
    assert "param_groups=[{'params': slice(0, 1)}, {'params': slice(1, 2), 'lr': 0.2}, " in text
    assert text.endswith(", ... 2 more])")


def test_an_empty_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"is not a fastopt checkpoint"):
        params = np.zeros(3)
        fastopt.load_checkpoint(path, params, fastopt.SGD(params))
