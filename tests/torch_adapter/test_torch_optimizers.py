"""fastopt.torch: torch.optim's constructor, numerics, schedulers, zero_grad, clipping and
state_dicts, over flat buffers that backward writes in place.
"""

import collections
import copy
import importlib
import os
import subprocess
import sys

import numpy as np
import pytest

torch = importlib.import_module("torch") if os.environ.get("CI") else pytest.importorskip("torch")
import fastopt  # noqa: E402
import fastopt.torch as ft  # noqa: E402
from fastopt.kernels import blockwise  # noqa: E402

pytestmark = pytest.mark.torch

CASES = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "maximize": False}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1}),
    ("RMSprop", {"lr": 0.01}),
    ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.5, "weight_decay": 1e-2}),
    ("Adam", {"lr": 1e-2}),
    ("Adam", {"lr": 1e-2, "amsgrad": True, "weight_decay": 1e-2}),
    ("AdamW", {"lr": 1e-2}),
    ("AdamW", {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6, "maximize": True}),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CASES)]
TOLERANCE = {torch.float32: 3e-5, torch.float64: 1e-12}


def network(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(12, 24), torch.nn.Tanh(), torch.nn.LayerNorm(24), torch.nn.Linear(24, 3)
    ).to(dtype)


def data(dtype, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 12, generator=generator, dtype=dtype)
    return x, torch.randint(0, 3, (64,), generator=generator)


def train(model, opt, x, y, steps, zero=lambda opt, model: opt.zero_grad(), scheduler=None):
    sign = -1 if opt.param_groups[0]["maximize"] else 1  # maximise the negated loss
    for _ in range(steps):
        zero(opt, model)
        (sign * torch.nn.functional.cross_entropy(model(x), y)).backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()


def assert_close_to_torch(ours, name, options, dtype, steps, scheduler=None):
    """``ours`` (trained by fastopt.torch) against torch.optim's for-loop implementation
    trained the same way: within ``TOLERANCE``, or within twice the distance between two
    torch runs whose starting points differ by one ulp (where training amplifies
    last-bit differences).
    """
    x, y = data(dtype)
    theirs, nudged = network(dtype), network(dtype)
    with torch.no_grad():
        for p in nudged.parameters():
            p.copy_(torch.nextafter(p, p + 1))
    for model in (theirs, nudged):
        opt = getattr(torch.optim, name)(model.parameters(), foreach=False, **options)
        train(model, opt, x, y, steps, scheduler=scheduler and scheduler(opt))
    sensitivity = max_difference(nudged, theirs)
    assert max_difference(ours, theirs) <= max(TOLERANCE[dtype], 2 * sensitivity)
    return theirs


def max_difference(a, b):
    return max((pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name, options", CASES, ids=IDS)
def test_matches_torch_optim_on_a_network(name, options, dtype):
    """After 120 steps on a network, fastopt.torch is within a fixed bound of torch's
    for-loop implementation, or, where training amplifies last-bit differences (centered
    RMSprop divides by sqrt(v - g_avg^2); a maximised loss runs away), no further from it
    than torch itself is when its starting point moves by one ulp.
    """
    ours = network(dtype)
    train(ours, getattr(ft, name)(ours.parameters(), **options), *data(dtype), 120)
    assert_close_to_torch(ours, name, options, dtype, 120)
    assert max_difference(ours, network(dtype)) > 100 * TOLERANCE[dtype]  # it did train


@pytest.mark.parametrize("name, options", CASES, ids=IDS)
def test_bit_equal_to_fastopt_on_the_same_flat_buffer(name, options):
    """The adapter adds nothing to the numerics: fastopt's own optimizer, stepped on a copy
    of the flat buffer with the same gradients, gives the same bytes.
    """
    x, y = data(torch.float32)
    model = network()
    opt = getattr(ft, name)(model.parameters(), **options)
    (flat,) = opt._flat.data.values()
    (flat_grad,) = opt._flat.grad.values()
    copy = flat.numpy().copy()
    plain = getattr(fastopt, name)(copy, **options)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        plain.step(flat_grad.numpy().copy())
        opt.step()
        assert flat.numpy().tobytes() == copy.tobytes()


def test_parameters_and_gradients_are_views_of_the_flat_buffers():
    model = network()
    before = [p.detach().clone() for p in model.parameters()]
    opt = ft.Adam(model.parameters())
    (flat,) = opt._flat.data.values()
    (flat_grad,) = opt._flat.grad.values()
    start = flat.data_ptr()
    for p, value in zip(model.parameters(), before):
        assert start <= p.data_ptr() < start + flat.numel() * 4
        assert torch.equal(p.detach(), value)
    x, y = data(torch.float32)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g.data_ptr() >= flat_grad.data_ptr() for g in grads)
    torch.nn.functional.cross_entropy(model(x), y).backward()  # accumulates in place
    assert all(p.grad is g for p, g in zip(model.parameters(), grads))
    assert flat_grad.abs().sum() > 0


@pytest.mark.parametrize(
    "zero",
    [
        lambda opt, model: opt.zero_grad(),
        lambda opt, model: opt.zero_grad(set_to_none=False),
        lambda opt, model: model.zero_grad(),  # sets every .grad to None
        lambda opt, model: [setattr(p, "grad", None) for p in model.parameters()],
    ],
    ids=["opt-set-to-none", "opt-zero", "model-zero-grad", "by-hand"],
)
def test_every_way_of_clearing_gradients_gives_torchs_result(zero):
    x, y = data(torch.float64)
    ours, theirs = network(torch.float64), network(torch.float64)
    opt = ft.Adam(ours.parameters(), lr=1e-2)
    train(ours, opt, x, y, 40, zero=zero)
    train(theirs, torch.optim.Adam(theirs.parameters(), lr=1e-2, foreach=False), x, y, 40,
          zero=zero)  # fmt: skip
    assert max_difference(ours, theirs) <= 1e-12
    assert all(
        p.grad is None or p.grad is v for p, v in zip(ours.parameters(), opt._flat.grad_views)
    )


def test_a_gradient_replaced_by_a_hook_or_the_user_is_used_not_the_stale_one():
    p = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    opt = ft.SGD([p], lr=0.5)
    p.grad = torch.full((4,), 2.0, dtype=torch.float64)  # a new tensor, not the view
    opt.step()
    assert torch.equal(p.detach(), torch.zeros(4, dtype=torch.float64))
    p.grad = torch.full((4,), -2.0, dtype=torch.float64)
    opt.step()
    assert torch.equal(p.detach(), torch.ones(4, dtype=torch.float64))


def test_parameters_without_a_gradient_are_skipped_as_torch_skips_them():
    def build():
        torch.manual_seed(0)
        used, unused = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
        frozen = torch.nn.Parameter(torch.ones(2), requires_grad=False)
        return used, unused, frozen

    results = []
    makers = (
        lambda ps: ft.Adam(ps, lr=0.1, weight_decay=0.1),
        lambda ps: torch.optim.Adam(ps, lr=0.1, weight_decay=0.1, foreach=False),
    )
    for make in makers:
        used, unused, frozen = build()
        params = [*used.parameters(), *unused.parameters(), frozen]
        opt = make(params)
        x = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
        for t in range(6):
            opt.zero_grad()
            model = used if t % 2 == 0 else unused  # each is reached every other step
            model(x).square().sum().backward()
            opt.step()
        results.append(([p.detach().clone() for p in params], opt.state_dict()["state"]))
    (ours, our_state), (theirs, their_state) = results
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=0, atol=1e-6)
    assert set(our_state) == set(their_state) == {0, 1, 2, 3}  # frozen: no state
    for index in their_state:
        assert our_state[index]["step"].item() == their_state[index]["step"].item() == 3


@pytest.mark.parametrize(
    "scheduler",
    [
        lambda opt: torch.optim.lr_scheduler.StepLR(opt, 10, 0.5),
        lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=60),
        lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=60),
        lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1 / (1 + e)),
    ],
    ids=["step", "one-cycle", "cosine", "lambda"],
)
@pytest.mark.parametrize(
    "name, options", [CASES[1], CASES[5], CASES[7]], ids=["sgd", "rmsprop", "adam"]
)
def test_torch_schedulers_drive_it(name, options, scheduler):
    x, y = data(torch.float64)
    ours = network(torch.float64)
    ours_opt = getattr(ft, name)(ours.parameters(), **options)
    seen = []
    ours_opt.register_step_pre_hook(lambda opt, args, kwargs: seen.append(
        (opt.param_groups[0]["lr"], opt.param_groups[0].get("momentum"),
         opt.param_groups[0].get("betas"))))  # fmt: skip
    train(ours, ours_opt, x, y, 60, scheduler=scheduler(ours_opt))
    assert_close_to_torch(ours, name, options, torch.float64, 60, scheduler=scheduler)
    assert len(set(seen)) > 5  # the scheduler changed what each step used


def test_per_group_options_and_two_dtypes():
    torch.manual_seed(0)
    a = torch.nn.Linear(4, 4).double()
    b = torch.nn.Linear(4, 2)
    groups = lambda: [  # noqa: E731
        {"params": a.parameters(), "momentum": 0.5, "lr": 0.05},
        {"params": b.parameters(), "weight_decay": 0.1},
    ]
    reference = [p.detach().clone() for p in (*a.parameters(), *b.parameters())]
    opt = ft.SGD(groups(), lr=0.1, momentum=0.9)
    assert len(opt._flat.data) == 2  # one flat buffer per dtype
    x = torch.randn(3, 4, dtype=torch.float64)
    for _ in range(5):
        opt.zero_grad()
        b(a(x).float()).square().sum().backward()
        opt.step()
    ours = [p.detach().clone() for p in (*a.parameters(), *b.parameters())]
    for p, value in zip((*a.parameters(), *b.parameters()), reference):
        p.data = value.clone()
    theirs_opt = torch.optim.SGD(groups(), lr=0.1, momentum=0.9, foreach=False)
    for _ in range(5):
        theirs_opt.zero_grad()
        b(a(x).float()).square().sum().backward()
        theirs_opt.step()
    for mine, p in zip(ours, (*a.parameters(), *b.parameters())):
        assert torch.allclose(mine, p.detach(), rtol=0, atol=1e-6)


def test_clipping_matches_clip_grad_norm_and_the_option():
    x, y = data(torch.float64)
    models = [network(torch.float64) for _ in range(3)]
    opts = [ft.Adam(models[0].parameters(), lr=1e-2),
            torch.optim.Adam(models[1].parameters(), lr=1e-2, foreach=False),
            ft.Adam(models[2].parameters(), lr=1e-2, max_grad_norm=0.05)]  # fmt: skip
    for _ in range(30):
        for i, (model, opt) in enumerate(zip(models, opts)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            if i < 2:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)
            opt.step()
    assert max_difference(models[0], models[1]) <= 1e-12
    assert max_difference(models[2], models[1]) <= 1e-10  # inside the kernel: no extra pass


def test_skip_nonfinite_leaves_everything_unchanged():
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = ft.Adam([p], lr=0.1, skip_nonfinite=True)
    p.grad = torch.tensor([1.0, float("nan"), 0.0], dtype=torch.float64)
    opt.step()
    assert torch.equal(p.detach(), torch.ones(3, dtype=torch.float64)) and opt.skipped_steps == 1
    assert not opt.state_dict()["state"]


@pytest.mark.parametrize("name, options", [CASES[1], CASES[3], CASES[5], CASES[7], CASES[8]],
                         ids=["sgd", "adagrad", "rmsprop", "adam", "adamw"])  # fmt: skip
def test_state_dicts_move_both_ways_between_torch_and_fastopt(name, options):
    x, y = data(torch.float64)
    uninterrupted = network(torch.float64)
    train(uninterrupted, getattr(ft, name)(uninterrupted.parameters(), **options), x, y, 40)
    # fastopt -> torch.optim
    first = network(torch.float64)
    ours = getattr(ft, name)(first.parameters(), **options)
    train(first, ours, x, y, 20)
    sd = ours.state_dict()
    assert set(sd["state"][0]) == set(sd["state"][0]) & {"step", "momentum_buffer", "sum",
        "square_avg", "grad_avg", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}  # fmt: skip
    second = network(torch.float64)
    second.load_state_dict(first.state_dict())
    theirs = getattr(torch.optim, name)(second.parameters(), foreach=False, **options)
    theirs.load_state_dict(sd)
    train(second, theirs, x, y, 20)
    assert max_difference(second, uninterrupted) <= 1e-12
    # torch.optim -> fastopt
    third = network(torch.float64)
    torch_opt = getattr(torch.optim, name)(third.parameters(), foreach=False, **options)
    train(third, torch_opt, x, y, 20)
    fourth = network(torch.float64)
    fourth.load_state_dict(third.state_dict())
    resumed = getattr(ft, name)(fourth.parameters(), **options)
    resumed.load_state_dict(torch_opt.state_dict())
    train(fourth, resumed, x, y, 20)
    assert max_difference(fourth, uninterrupted) <= 1e-12
    # the loaded state lives in the flat buffers the kernels update
    for p in fourth.parameters():
        for value in resumed.state[p].values():
            if isinstance(value, torch.Tensor) and value.dim():
                owner = {t.data_ptr() for t in resumed._buffers.values()}
                assert value.untyped_storage().data_ptr() in owner


def test_unsupported_parameters_and_options_get_clear_errors():
    with pytest.raises(TypeError, match=r"parameter 0 \(3,\) is torch.float16: fastopt.torch"):
        ft.Adam([torch.nn.Parameter(torch.ones(3, dtype=torch.float16))])
    with pytest.raises(TypeError, match="is complex"):
        ft.SGD([torch.nn.Parameter(torch.ones(3, dtype=torch.complex64))])
    with pytest.raises(ValueError, match="differentiable=True is not supported"):
        ft.Adam([torch.nn.Parameter(torch.ones(3))], differentiable=True)
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        ft.Adam([torch.nn.Parameter(torch.ones(3))], lr=-1)
    with pytest.raises(ValueError, match="Invalid beta parameter at index 1: 1.0"):
        ft.Adam([torch.nn.Parameter(torch.ones(3))], betas=(0.9, 1.0))
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = ft.SGD(emb.parameters(), lr=0.1)
    opt.zero_grad()  # the view stays: a dense accumulation
    emb(torch.tensor([1, 2])).sum().backward()
    assert not emb.weight.grad.is_sparse
    emb.weight.grad = None  # now autograd installs a sparse gradient
    with pytest.raises(TypeError, match="sparse gradient"):
        emb(torch.tensor([1, 2])).sum().backward()


def test_a_model_converted_after_construction_is_refused_before_any_write():
    model = network()
    opt = ft.Adam(model.parameters())
    model.double()
    x, y = data(torch.float64)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    (flat,) = opt._flat.data.values()
    before = flat.clone()
    with pytest.raises(RuntimeError, match="no longer lives in the optimizer's flat buffer"):
        opt.step()
    assert torch.equal(flat, before)


def test_eager_torch_compile_trains_the_same():
    x, y = data(torch.float64)
    eager, compiled = network(torch.float64), network(torch.float64)
    opt_eager = ft.Adam(eager.parameters(), lr=1e-2)
    opt_compiled = ft.Adam(compiled.parameters(), lr=1e-2)
    train(eager, opt_eager, x, y, 5)
    train(torch.compile(compiled, backend="eager"), opt_compiled, x, y, 5)
    assert max_difference(eager, compiled) <= 1e-12


def test_import_fastopt_does_not_import_torch():
    code = "import sys, fastopt; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert out.strip() == "False"


def test_the_benchmark_script_runs(tmp_path):
    script = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "torch_model.py")
    out = tmp_path / "torch.json"
    subprocess.run([sys.executable, script, "--hidden", "16", "--rounds", "2", "--optimizers",
                    "adam", "rmsprop", "--json", str(out)], check=True, capture_output=True,
                   timeout=300)  # fmt: skip
    import json

    result = json.loads(out.read_text())
    assert [row["optimizer"] for row in result["rows"]] == ["adam", "rmsprop"]
    assert result["rows"][0]["x_torch_fused"] > 0 and result["checks"]["tensors"] == 8
    subprocess.run([sys.executable, script, "--hidden", "16", "--rounds", "2", "--optimizers",
                    "adam", "--precision", "8bit", "--json", str(out)], check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    (row,) = json.loads(out.read_text())["rows"]
    assert row["state_precision"] == "8bit" and row["x_fastopt_full"] > 0
    memory = row["state_bytes"]
    assert 0.25 < memory["fastopt"] / memory["fastopt_full"] < 0.3  # padding included


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW"])
def test_a_fastopt_schedule_as_lr_is_evaluated_per_update(name):
    schedule = fastopt.schedules.cosine_decay(0.05, decay_steps=20, end_lr=0.005)
    x, y = data(torch.float32)
    model = network()
    opt = getattr(ft, name)(model.parameters(), lr=schedule)
    (flat,) = opt._flat.data.values()
    (flat_grad,) = opt._flat.grad.values()
    copy = flat.numpy().copy()
    plain = getattr(fastopt, name)(copy, lr=schedule)
    for _ in range(25):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        plain.step(flat_grad.numpy().copy())
        opt.step()
    assert flat.numpy().tobytes() == copy.tobytes()
    assert not np_equal(copy, network()[0].weight.detach().numpy())


def np_equal(flat, first_weight):
    return flat[: first_weight.size].tobytes() == first_weight.reshape(-1).tobytes()


# -- checkpoints, options and construction ------------------------------------------------
@pytest.mark.parametrize("name, options", [CASES[1], CASES[7]], ids=["sgd", "adam"])
def test_loading_its_own_state_dict_changes_nothing(name, options):
    x, y = data(torch.float64)
    model = network(torch.float64)
    opt = getattr(ft, name)(model.parameters(), **options)
    train(model, opt, x, y, 3)
    before = {i: {k: v.clone() for k, v in entry.items()}
              for i, entry in opt.state_dict()["state"].items()}  # fmt: skip
    opt.load_state_dict(opt.state_dict())
    after = opt.state_dict()["state"]
    for i, entry in before.items():
        for key, value in entry.items():
            assert torch.equal(after[i][key], value), (i, key)
    twin = network(torch.float64)
    twin_opt = getattr(ft, name)(twin.parameters(), **options)
    train(twin, twin_opt, x, y, 3)
    train(model, opt, x, y, 3)
    train(twin, twin_opt, x, y, 3)
    assert max_difference(model, twin) == 0


def test_add_param_group_after_construction_raises():
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    opt = ft.SGD([a], lr=0.1)
    with pytest.raises(RuntimeError, match="cannot add a parameter group after construction"):
        opt.add_param_group({"params": [b], "lr": 1.0})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("make", [ft.SGD, torch.optim.SGD, ft.Adam, torch.optim.Adam])
def test_a_parameter_unfrozen_later_is_updated_at_every_step(make):
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64), requires_grad=False)
    opt = make([p], lr=0.1)
    p.requires_grad_(True)
    for _ in range(3):
        opt.zero_grad()
        (p * 1.0).sum().backward()
        opt.step()
    expected = {ft.SGD: 0.7, torch.optim.SGD: 0.7, ft.Adam: 0.7, torch.optim.Adam: 0.7}[make]
    assert torch.allclose(p.detach(), torch.full((3,), expected, dtype=torch.float64))


@pytest.mark.parametrize(
    "name, options, option",
    [("Adam", {"lr": 1e-2}, "amsgrad"), ("RMSprop", {"lr": 1e-2}, "centered")],
    ids=["adam-amsgrad", "rmsprop-centered"],
)
def test_an_option_that_needs_new_state_mid_run_raises_before_any_write(name, options, option):
    """Torch raises a KeyError for the missing buffer; fastopt.torch says what is missing,
    and writes nothing.
    """
    x, y = data(torch.float64)
    results = []
    for module in (ft, torch.optim):
        model = network(torch.float64)
        params = list(model.parameters())
        opt = getattr(module, name)([{"params": params[:2]}, {"params": params[2:]}], **options)
        train(model, opt, x, y, 2)
        opt.param_groups[1][option] = True
        torch.nn.functional.cross_entropy(model(x), y).backward()
        before = [p.detach().clone() for p in params]
        state = {k: v.clone() for k, v in opt.state[params[0]].items()}
        with pytest.raises((RuntimeError, KeyError)) as error:
            opt.step()
        results.append(error)
        if module is ft:
            assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))
            assert all(torch.equal(opt.state[params[0]][k], v) for k, v in state.items())
    ours, theirs = results
    assert theirs.type is KeyError
    assert ours.type is RuntimeError
    assert "param_groups[1] now needs the state" in str(ours.value)
    assert repr(theirs.value.args[0]) in str(ours.value)  # the buffer torch misses


def test_a_replaced_optimizer_frees_its_buffers_and_hooks():
    import gc
    import weakref

    model = torch.nn.Linear(50, 50)
    old = ft.Adam(model.parameters())
    flat = weakref.ref(old._flat)
    del old
    gc.collect()
    assert flat() is None
    new = ft.Adam(model.parameters())
    assert len(model.weight._post_accumulate_grad_hooks) == 1
    model(torch.ones(2, 50)).sum().backward()
    assert model.weight.grad is new._flat.grad_views[0]


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_create_graph_gradients_keep_their_graph_until_the_step():
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    opt = ft.SGD([p], lr=0.1)
    (p**3).sum().backward(create_graph=True)
    assert p.grad.requires_grad  # a gradient penalty can differentiate through it
    penalty = p.grad.square().sum()
    assert penalty.grad_fn is not None
    opt.step()
    assert torch.allclose(
        p.detach(),
        torch.tensor([1.0, 2.0], dtype=torch.float64)
        - 0.1 * 3 * torch.tensor([1.0, 4.0], dtype=torch.float64),
    )


def test_sgd_without_momentum_keeps_torchs_empty_state():
    results = []
    for make in (ft.SGD, torch.optim.SGD):
        p = torch.nn.Parameter(torch.ones(3))
        opt = make([p], lr=0.1)
        p.grad = torch.ones(3)
        opt.step()
        results.append(opt.state_dict()["state"])
    assert results[0] == results[1]


def test_huge_finite_gradients_are_not_skipped():
    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = ft.SGD([p], lr=1e-200, skip_nonfinite=True)
    p.grad = torch.full((3,), 1e200, dtype=torch.float64)  # the sum of squares overflows
    opt.step()
    assert opt.skipped_steps == 0 and torch.allclose(
        p.detach(), -torch.ones(3, dtype=torch.float64)
    )


def test_torchs_argument_errors():
    p = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True` together"):
        ft.Adam([p], foreach=True, fused=True)
    with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
        ft.Adam([p], lr=torch.tensor([0.1, 0.2]))


def assert_resumes_exactly(name, options, precision, build, x, y, steps):
    """``2 * steps`` updates in one run equal ``steps``, a state_dict, and ``steps`` more
    in a new optimizer on a copy of the model, bit for bit. Returns the first half's
    model, optimizer and state_dict.
    """
    uninterrupted = build()
    whole = getattr(ft, name)(uninterrupted.parameters(), state_precision=precision, **options)
    train(uninterrupted, whole, x, y, 2 * steps)
    first = build()
    ours = getattr(ft, name)(first.parameters(), state_precision=precision, **options)
    train(first, ours, x, y, steps)
    sd = ours.state_dict()
    second = build()
    second.load_state_dict(first.state_dict())
    resumed = getattr(ft, name)(second.parameters(), state_precision=precision, **options)
    resumed.load_state_dict(sd)
    train(second, resumed, x, y, steps)
    assert max_difference(second, uninterrupted) == 0
    return first, ours, sd


BF16_CASES = [CASES[1], CASES[3], CASES[5], CASES[7], CASES[9]]
BF16_IDS = ["sgd", "adagrad", "rmsprop", "adam", "adamw"]


@pytest.mark.parametrize("name, options", BF16_CASES, ids=BF16_IDS)
def test_bfloat16_state_is_bit_equal_to_fastopt_on_the_same_flat_buffer(name, options):
    """With state_precision="bfloat16" the state is torch.bfloat16 tensors (views of the
    flat uint16 words the kernels update) and the steps are fastopt's bfloat16 steps.
    """
    x, y = data(torch.float32)
    model = network()
    opt = getattr(ft, name)(model.parameters(), state_precision="bfloat16", **options)
    (flat,) = opt._flat.data.values()
    (flat_grad,) = opt._flat.grad.values()
    copy = flat.numpy().copy()
    plain = getattr(fastopt, name)(copy, state_precision="bfloat16", **options)
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        plain.step(flat_grad.numpy().copy())
        opt.step()
        assert flat.numpy().tobytes() == copy.tobytes()
    for name_ in plain.state.names():
        words = next(v for k, v in opt._host_buffers.items() if k[1] == name_)
        assert words.dtype == np.uint16 and words.tobytes() == plain.state[name_].tobytes()
    entry = opt.state[next(iter(model.parameters()))]
    assert all(v.dtype == torch.bfloat16 for k, v in entry.items() if k != "step")


@pytest.mark.parametrize("name, options", [BF16_CASES[0], BF16_CASES[3]], ids=["sgd", "adam"])
def test_bfloat16_state_dicts_resume_exactly_and_load_into_torch(name, options):
    x, y = data(torch.float32)
    first, ours, sd = assert_resumes_exactly(name, options, "bfloat16", network, x, y, 15)
    # torch.optim takes the state as float32 values, exactly
    third = network()
    third.load_state_dict(first.state_dict())
    theirs = getattr(torch.optim, name)(third.parameters(), foreach=False, **options)
    theirs.load_state_dict(sd)
    for p, q in zip(first.parameters(), third.parameters()):
        for key, value in ours.state[p].items():
            if key != "step":
                assert theirs.state[q][key].dtype == torch.float32
                assert torch.equal(theirs.state[q][key], value.float())


EIGHT_CASES = [CASES[1], CASES[3], ("RMSprop", {"lr": 0.01, "momentum": 0.5}), CASES[7], CASES[9]]
EIGHT_IDS = ["sgd", "adagrad", "rmsprop", "adam", "adamw"]


def wide_network(dtype=torch.float32, seed=0):
    """7,427 parameters, in tensors whose sizes are not multiples of the 8-bit block."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(60, 100), torch.nn.Tanh(), torch.nn.LayerNorm(100), torch.nn.Linear(100, 3)
    ).to(dtype)


def wide_data(dtype=torch.float32, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 60, generator=generator, dtype=dtype)
    return x, torch.randint(0, 3, (64,), generator=generator)


def unpadded(opt):
    """The parameters' elements of the flat buffer, without the 8-bit alignment padding."""
    (flat,) = opt._flat.data.values()
    return np.concatenate([flat[s.start : s.stop].numpy() for s in opt._flat.slots])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name, options", EIGHT_CASES, ids=EIGHT_IDS)
def test_8bit_state_is_fastopts_with_one_block_layout_per_parameter(name, options, dtype):
    """With state_precision="8bit" every parameter starts on a block in the flat buffer
    (zero padding after it), so its state is whole blocks of its own; the steps equal
    fastopt's 8-bit optimizer on the unpadded values with one parameter group per
    parameter (blocks start at each group), bit for bit: params, codes and scales.
    """
    x, y = wide_data(dtype)
    model = wide_network(dtype)
    opt = getattr(ft, name)(model.parameters(), state_precision="8bit", **options)
    assert opt.state_precision == "8bit"
    slots = opt._flat.slots
    assert all(s.start % 256 == 0 and s.end % 256 == 0 for s in slots)
    assert any(s.end > s.stop for s in slots)  # padded
    sizes = [s.stop - s.start for s in slots]
    bounds = np.cumsum([0, *sizes])
    copy = unpadded(opt)
    groups = [{"params": slice(int(a), int(b))} for a, b in zip(bounds[:-2], bounds[1:-1])]
    plain = getattr(fastopt, name)(copy, state_precision="8bit", param_groups=groups, **options)
    (flat, flat_grad) = (*opt._flat.data.values(), *opt._flat.grad.values())
    for _ in range(12):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        grad = np.concatenate([flat_grad[s.start : s.stop].numpy() for s in slots])
        plain.step(grad)
        opt.step()
        assert unpadded(opt).tobytes() == copy.tobytes()
    padding = np.concatenate([flat[s.stop : s.end].numpy() for s in slots])
    assert padding.size and not padding.any()  # the padding stays zero
    first = np.cumsum([0, *[-(-n // 256) for n in sizes]])
    for state_name in plain.state.names():
        for k, p in enumerate(model.parameters()):
            entry = opt.state[p]
            codes, scales = entry[state_name + "_codes"], entry[state_name + "_absmax"]
            assert codes.dtype == torch.uint8 and codes.shape == p.shape
            expected = plain.state[state_name][bounds[k] : bounds[k + 1]]
            assert codes.numpy().reshape(-1).tobytes() == expected.tobytes()
            expected = plain.state[state_name + "_absmax"][first[k] : first[k + 1]]
            assert scales.dtype == dtype and scales.numpy().tobytes() == expected.tobytes()
    for p in model.parameters():  # only the 8-bit entries
        assert not any(n in opt.state[p] for n in plain.state.names())


@pytest.mark.parametrize("name, options", [EIGHT_CASES[0], EIGHT_CASES[3]], ids=["sgd", "adam"])
def test_8bit_state_dicts_resume_exactly_and_convert_to_and_from_torch(name, options):
    x, y = wide_data()
    first, ours, sd = assert_resumes_exactly(name, options, "8bit", wide_network, x, y, 10)
    # full_state_dict(): decoded values, which torch.optim loads and fastopt full state too
    decoded = {}
    for k, p in enumerate(first.parameters()):
        for key in ours.state[p]:
            if key.endswith("_codes"):
                state_name = key[: -len("_codes")]
                signed = state_name not in blockwise.UNSIGNED_STATE
                decoded[k, state_name] = blockwise.dequantize(
                    ours.state[p][key].numpy().reshape(-1),
                    ours.state[p][state_name + "_absmax"].numpy(),
                    signed, [(0, p.numel())], np.float32,
                )  # fmt: skip
    assert decoded
    full_sd = ours.full_state_dict()
    third = wide_network()
    third.load_state_dict(first.state_dict())
    theirs = getattr(torch.optim, name)(third.parameters(), foreach=False, **options)
    theirs.load_state_dict(full_sd)
    fourth = wide_network()
    full = getattr(ft, name)(fourth.parameters(), **options)
    full.load_state_dict(sd)  # an 8-bit state_dict into full state: decoded
    for (k, state_name), values in decoded.items():
        q, r = list(third.parameters())[k], list(fourth.parameters())[k]
        assert theirs.state[q][state_name].numpy().reshape(-1).tobytes() == values.tobytes()
        assert full.state[r][state_name].numpy().reshape(-1).tobytes() == values.tobytes()
    # torch.optim's float state into 8-bit state: encoded per parameter, as a step would
    train(third, theirs, x, y, 3)
    fifth = wide_network()
    eight = getattr(ft, name)(fifth.parameters(), state_precision="8bit", **options)
    eight.load_state_dict(theirs.state_dict())
    for q, p in zip(third.parameters(), fifth.parameters()):
        for state_name, value in theirs.state[q].items():
            if state_name == "step":
                continue
            signed = state_name not in blockwise.UNSIGNED_STATE
            codes, scales = blockwise.quantize(value.numpy().reshape(-1), signed, [(0, p.numel())])
            assert eight.state[p][state_name + "_codes"].numpy().reshape(-1).tobytes() == (
                codes.tobytes()
            )
            assert eight.state[p][state_name + "_absmax"].numpy().tobytes() == scales.tobytes()


def test_8bit_state_skips_a_parameter_without_a_gradient():
    """A parameter whose gradient is None at a step keeps its codes, scales and values
    bit for bit while the others (in the same run before) are updated.
    """
    x, y = wide_data()
    model = wide_network()
    opt = ft.Adam(model.parameters(), lr=1e-2, state_precision="8bit")
    train(model, opt, x, y, 3)
    frozen = model[2].weight
    before = {k: v.clone() for k, v in opt.state[frozen].items()}
    values = frozen.detach().clone()
    others = model[3].weight.detach().clone()
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    frozen.grad = None
    opt.step()
    assert torch.equal(frozen.detach(), values)
    assert all(torch.equal(opt.state[frozen][k], v) for k, v in before.items())
    assert not torch.equal(model[3].weight.detach(), others)


def test_8bit_state_size_threshold_and_refusals():
    small = ft.Adam(network().parameters(), state_precision="8bit")  # 435 elements
    assert small.state_precision == "full" and small.requested_precision == "8bit"
    for model in (wide_network(), network()):  # refused at any size, as fastopt.RMSprop
        with pytest.raises(ValueError, match=r"centered=True with state_precision='8bit'"):
            ft.RMSprop(model.parameters(), centered=True, state_precision="8bit")
    for cls in (ft.Adam, ft.AdamW, ft.RMSprop, ft.Adagrad):  # the padding's 0 / (0 + eps)
        with pytest.raises(ValueError, match=r"eps=0 with state_precision='8bit'"):
            cls(wide_network().parameters(), eps=0, state_precision="8bit")
        cls(network().parameters(), eps=0, state_precision="8bit")  # full state: allowed
    with pytest.raises(ValueError, match=r"Invalid state_precision: 'fp8'"):
        ft.SGD(network().parameters(), lr=0.1, state_precision="fp8")
    model = wide_network()
    opt = ft.Adam(model.parameters(), state_precision="8bit")
    x, y = wide_data()
    train(model, opt, x, y, 1)
    sd = opt.state_dict()
    entry = sd["state"][0]
    entry["exp_avg_absmax"] = entry["exp_avg_absmax"][:-1]
    fresh_model = wide_network()
    fresh = ft.Adam(fresh_model.parameters(), lr=0.5, state_precision="8bit")
    train(fresh_model, fresh, x, y, 2)
    before = {k: v.clone() for k, v in fresh.state[fresh_model[0].weight].items()}
    with pytest.raises(ValueError, match=r"parameter 0 \(100, 60\) has exp_avg_codes with 6000"):
        fresh.load_state_dict(sd)
    # nothing changed: the same state entries (the flat views), lr and step count
    entry = fresh.state[fresh_model[0].weight]
    assert entry.keys() == before.keys() and all(torch.equal(entry[k], before[k]) for k in entry)
    assert entry["exp_avg_codes"].data_ptr() == fresh._buffer(torch.float32, "exp_avg").data_ptr()
    assert fresh.param_groups[0]["lr"] == 0.5


def test_8bit_state_rejects_a_buffer_of_the_wrong_size_and_keeps_its_state():
    x, y = wide_data()
    model = wide_network()
    opt = ft.Adam(model.parameters(), state_precision="8bit")
    train(model, opt, x, y, 2)
    theirs_model = wide_network()
    theirs = torch.optim.Adam(theirs_model.parameters())
    train(theirs_model, theirs, x, y, 1)
    sd = theirs.state_dict()
    sd["state"][1]["exp_avg"] = sd["state"][1]["exp_avg"][:-1]
    before = opt.state_dict()
    snapshot = {i: {k: v.clone() for k, v in e.items()} for i, e in before["state"].items()}
    with pytest.raises(ValueError, match=r"parameter 1 \(100,\) has exp_avg with 99 elements"):
        opt.load_state_dict(sd)
    after = opt.state_dict()
    assert after["state"].keys() == snapshot.keys()
    for i, entry in snapshot.items():
        assert all(torch.equal(after["state"][i][k], v) for k, v in entry.items())


def test_8bit_full_state_dict_numbers_a_tied_weight_as_torch_does():
    """A parameter listed twice in a group: torch's state_dict files its state under its
    last index, and full_state_dict() files the decoded values there too.
    """
    weight = torch.nn.Parameter(torch.randn(80, 80))
    with pytest.warns(UserWarning, match="duplicate parameters"):
        opt = ft.Adam([weight, weight], state_precision="8bit")
    weight.grad = torch.randn(80, 80)
    opt.step()
    sd, full = opt.state_dict(), opt.full_state_dict()
    assert sd["param_groups"][0]["params"] == full["param_groups"][0]["params"] == [1, 1]
    assert list(sd["state"]) == list(full["state"]) == [1]
    assert set(full["state"][1]) == {"step", "exp_avg", "exp_avg_sq"}
    with pytest.warns(UserWarning, match="duplicate parameters"):
        theirs = torch.optim.Adam([weight, weight])
    theirs.load_state_dict(full)
    assert torch.equal(theirs.state[weight]["exp_avg"], full["state"][1]["exp_avg"])


def test_8bit_state_with_two_dtypes_and_an_empty_parameter():
    """One flat buffer (and one set of codes and scales) per dtype, each aligned; a
    parameter of 0 elements has no codes and no scales.
    """
    torch.manual_seed(0)
    single = torch.nn.Linear(70, 70)
    double = torch.nn.Linear(70, 70).double()
    empty = torch.nn.Parameter(torch.zeros(0, 5))
    params = [*single.parameters(), empty, *double.parameters()]
    opt = ft.Adam(params, lr=1e-2, state_precision="8bit")
    assert set(opt._flat.data) == {torch.float32, torch.float64}
    x = torch.randn(8, 70)
    for _ in range(3):
        opt.zero_grad()
        (single(x).square().sum() + double(x.double()).square().sum()).backward()
        empty.grad = torch.zeros(0, 5)
        opt.step()
    for p in params:
        entry = opt.state[p]
        assert entry["exp_avg_codes"].shape == p.shape
        assert entry["exp_avg_absmax"].numel() == -(-p.numel() // 256)
        assert entry["exp_avg_absmax"].dtype == p.dtype
        if p.numel():
            assert entry["exp_avg_codes"].any() and entry["exp_avg_absmax"].all()
    assert all(flat.numel() % 256 == 0 for flat in opt._flat.data.values())


def test_8bit_state_with_skipping_and_clipping():
    """skip_nonfinite: a NaN gradient leaves params, codes and scales bit for bit;
    max_grad_norm: the step equals the unclipped 8-bit step on the clipped gradient.
    """
    x, y = wide_data()
    model = wide_network()
    opt = ft.Adam(model.parameters(), lr=1e-2, state_precision="8bit", skip_nonfinite=True)
    train(model, opt, x, y, 2)
    params = [p.detach().clone() for p in model.parameters()]
    names = list(opt.state[next(model.parameters())])
    state = {n: [opt.state[p][n].clone() for p in model.parameters()] for n in names}
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    model[0].weight.grad[3, 4] = float("nan")
    opt.step()
    assert opt.skipped_steps == 1
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params))
    for n, values in state.items():
        assert all(torch.equal(opt.state[p][n], v) for p, v in zip(model.parameters(), values))
    # SGD: the update is proportional to the gradient (Adam's would not show the clipping)
    clipped, plain, unclipped = wide_network(), wide_network(), wide_network()
    options = {"lr": 0.1, "momentum": 0.9, "state_precision": "8bit"}
    ours = ft.SGD(clipped.parameters(), max_grad_norm=0.05, **options)
    reference, free = (
        ft.SGD(plain.parameters(), **options),
        ft.SGD(unclipped.parameters(), **options),
    )
    for _ in range(3):
        for net, o in ((clipped, ours), (plain, reference), (unclipped, free)):
            o.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
        norm = torch.nn.utils.clip_grad_norm_(plain.parameters(), 0.05)
        assert norm > 0.5  # clipped 10x or more
        for o in (ours, reference, free):
            o.step()
    # the norms differ in their last bits (float64 against torch's float32), which could
    # round a code the other way: by lr * 6% of a momentum, far below the unclipped gap
    assert max_difference(clipped, plain) < 1e-3
    assert max_difference(clipped, unclipped) > 5e-2


# -- torch idioms: old checkpoints, state resets, gradients written in place ---------------
def torch_group_defaults(name, sd):
    """The options torch's own ``__setstate__`` adds to a loaded group that lacks them:
    each option of the group that torch's class restores when it is left out.
    """
    restored = []
    for key in sd["param_groups"][0]:
        if key == "params":
            continue
        trimmed = {**sd, "param_groups": [{k: v for k, v in g.items() if k != key}
                                          for g in sd["param_groups"]]}  # fmt: skip
        probe = getattr(torch.optim, name)(network(torch.float64).parameters())
        try:
            probe.load_state_dict(trimmed)
        except (KeyError, ValueError):
            continue
        if key in probe.param_groups[0]:
            restored.append(key)
    return restored


@pytest.mark.parametrize("name, options", [CASES[1], CASES[3], CASES[5], CASES[7], CASES[8]],
                         ids=["sgd", "adagrad", "rmsprop", "adam", "adamw"])  # fmt: skip
def test_state_dicts_of_older_torch_versions_get_torchs_group_defaults(name, options):
    """A state_dict whose groups lack options that newer torch versions added (maximize,
    foreach, fused, decoupled_weight_decay, ...) loads as into torch's own class: the same
    defaults, and training resumes the same.
    """
    x, y = data(torch.float64)
    source = network(torch.float64)
    saved = getattr(torch.optim, name)(source.parameters(), foreach=False, **options)
    train(source, saved, x, y, 3)
    sd = saved.state_dict()
    dropped = torch_group_defaults(name, sd)
    assert {"maximize", "foreach", "differentiable"} <= set(dropped)
    old = {**sd, "param_groups": [{k: v for k, v in g.items() if k not in dropped}
                                  for g in sd["param_groups"]]}  # fmt: skip
    models = []
    for module in (ft, torch.optim):
        model = network(torch.float64)
        model.load_state_dict(source.state_dict())
        opt = getattr(module, name)(model.parameters(), **options)
        opt.load_state_dict(copy.deepcopy(old))
        models.append((model, opt))
    (ours, ours_opt), (theirs, theirs_opt) = models
    strip = lambda groups: [{k: v for k, v in g.items() if k != "params"} for g in groups]  # noqa: E731
    assert strip(ours_opt.param_groups) == strip(theirs_opt.param_groups)
    for model, opt in models:
        train(model, opt, x, y, 5)
    assert max_difference(ours, theirs) <= 1e-12


def test_an_adam_state_dict_loads_into_adamw_as_torchs_adamw_loads_it():
    """Torch's AdamW sets decoupled_weight_decay=True in every loaded group."""
    x, y = data(torch.float64)
    source = network(torch.float64)
    adam = torch.optim.Adam(source.parameters(), lr=1e-2, weight_decay=0.1, foreach=False)
    train(source, adam, x, y, 3)
    models = []
    for module in (ft, torch.optim):
        model = network(torch.float64)
        model.load_state_dict(source.state_dict())
        opt = module.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
        opt.load_state_dict(copy.deepcopy(adam.state_dict()))
        assert opt.param_groups[0]["decoupled_weight_decay"] is True
        train(model, opt, x, y, 20)
        models.append(model)
    assert max_difference(*models) <= 1e-12
    coupled = network(torch.float64)
    coupled.load_state_dict(source.state_dict())
    train(coupled, ft.Adam(coupled.parameters(), lr=1e-2, weight_decay=0.1), x, y, 20)
    assert max_difference(models[0], coupled) > 1e-4  # the decoupling is what made it


def test_a_parameter_unfrozen_after_construction_survives_a_zero_grad_before_any_step():
    results = []
    for module in (ft, torch.optim):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)).double()
        model[1].requires_grad_(False)
        opt = module.SGD(model.parameters(), lr=0.1)
        model[1].requires_grad_(True)
        x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        model(x).square().sum().backward()
        opt.zero_grad()  # a batch thrown away before any step
        for _ in range(3):
            model(x).square().sum().backward()
            opt.step()
            opt.zero_grad()
        results.append(model)
    assert max_difference(*results) <= 1e-12
    torch.manual_seed(0)
    untouched = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)
    assert not torch.allclose(results[0][1].weight.double(), untouched[1].weight.double())


def test_a_step_bumps_the_version_counter_of_the_parameters_it_updates():
    """As torch's in-place update does: a graph that saved a parameter before the step
    refuses to backpropagate through its new values, and a skipped parameter keeps its
    version.
    """
    for module in (ft, torch.optim):
        w = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
        skipped = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
        opt = module.SGD([w, skipped], lr=0.5)
        x = torch.tensor([3.0, 4.0], dtype=torch.float64, requires_grad=True)
        loss = (w * x).sum()  # saves w for d/dx
        loss.backward(retain_graph=True)
        versions = w._version, skipped._version
        opt.step()
        assert w._version > versions[0] and skipped._version == versions[1]
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()


@pytest.mark.parametrize("when", ["after-zero-grad", "after-construction"])
def test_a_gradient_written_into_p_grad_in_place_is_used(when):
    """The idiom ``if p.grad is None: p.grad = g.clone() else: p.grad.copy_(g)``: after
    ``zero_grad()`` (and on construction) torch has ``p.grad`` None and assigns,
    fastopt.torch keeps the zeroed view, which the copy writes into.
    """
    results = []
    for module in (ft, torch.optim):
        model = network(torch.float64)
        params = list(model.parameters())
        opt = module.Adam(params, lr=1e-2, weight_decay=0.1)
        generator = torch.Generator().manual_seed(3)
        for t in range(4):
            if when == "after-zero-grad" or t > 0:
                opt.zero_grad()
            for p in params[:-1]:  # the last one gets no gradient: skipped
                g = torch.randn(p.shape, dtype=p.dtype, generator=generator)
                if p.grad is None:
                    p.grad = g.clone()
                else:
                    p.grad.copy_(g)
            opt.step()
        results.append((model, opt.state_dict()["state"]))
    (ours, our_state), (theirs, their_state) = results
    assert max_difference(ours, theirs) <= 1e-12
    assert set(our_state) == set(their_state) == set(range(len(params) - 1))
    assert all(our_state[i]["step"].item() == 4 for i in our_state)


@pytest.mark.parametrize("set_to_none", [True, False], ids=["set-to-none", "zero"])
def test_in_place_operations_on_every_grad_give_no_gradient_to_unreached_parameters(
    set_to_none,
):
    """``clip_grad_norm_`` scales every ``.grad`` in place, the zero views of parameters
    backward did not reach included; those stay skipped, as torch skips their None (and
    with ``set_to_none=False`` a parameter that had a gradient steps its zero one).
    """
    results = []
    for module in (ft, torch.optim):
        torch.manual_seed(0)
        used, unused = torch.nn.Linear(3, 2).double(), torch.nn.Linear(3, 2).double()
        params = [*used.parameters(), *unused.parameters()]
        opt = module.Adam(params, lr=0.1, weight_decay=0.1)
        x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        for t in range(6):
            opt.zero_grad(set_to_none=set_to_none)
            (used if t < 3 else unused)(x).square().sum().backward()
            torch.nn.utils.clip_grad_norm_(params, 0.5)
            opt.step()
        steps = {k: v["step"].item() for k, v in opt.state_dict()["state"].items()}
        results.append(([p.detach().clone() for p in params], steps))
    (ours, our_steps), (theirs, their_steps) = results
    assert all(torch.allclose(a, b, rtol=0, atol=1e-12) for a, b in zip(ours, theirs))
    assert our_steps == their_steps
    assert our_steps[0] == (3 if set_to_none else 6) and our_steps[2] == 3


RESETS = {
    "clear": lambda opt, params: opt.state.clear(),
    "new-dict": lambda opt, params: setattr(opt, "state", collections.defaultdict(dict)),
    "del-one": lambda opt, params: opt.state.pop(params[0]),
    "rebind": lambda opt, params: [
        opt.state[p].update(
            {k: torch.tensor(0.0) if k == "step" else torch.zeros_like(p) for k in opt.state[p]}
        )
        for p in params[1:]
    ],
}
RESET_CASES = [CASES[2], CASES[5], CASES[7], CASES[9], CASES[3]]
RESET_IDS = ["sgd", "rmsprop", "adam", "adamw", "adagrad"]


@pytest.mark.parametrize("reset", list(RESETS))
@pytest.mark.parametrize("name, options", RESET_CASES, ids=RESET_IDS)
def test_state_resets_the_way_torch_users_make_them_train_as_torch(name, options, reset):
    """Clearing ``opt.state``, replacing it, deleting an entry, or binding new tensors in
    the entries: torch starts a parameter without an entry afresh at its next update and
    uses the tensors bound; so does fastopt.torch (its entries then hold its views again).
    torch's Adagrad creates its state at construction only and fails on a missing entry;
    fastopt.torch starts it afresh as at construction, which the check of it reproduces
    by binding that state in torch's.
    """
    x, y = data(torch.float64)
    results = []
    for module in (ft, torch.optim):
        model = network(torch.float64)
        params = list(model.parameters())
        opt = getattr(module, name)(params, **options)
        train(model, opt, x, y, 4)
        if module is torch.optim and name == "Adagrad" and reset != "rebind":
            for p in params[:1] if reset == "del-one" else params:
                opt.state[p] = {"step": torch.tensor(0.0), "sum": torch.full_like(p, 0.1)}
        else:
            RESETS[reset](opt, params)
        train(model, opt, x, y, 4)
        results.append((model, opt))
    (ours, ours_opt), (theirs, theirs_opt) = results
    assert max_difference(ours, theirs) <= 1e-12
    our_sd, their_sd = ours_opt.state_dict(), theirs_opt.state_dict()
    assert our_sd["state"].keys() == their_sd["state"].keys()
    for index, entry in their_sd["state"].items():
        assert our_sd["state"][index].keys() == entry.keys()
        for key, value in entry.items():
            assert torch.allclose(our_sd["state"][index][key], value, rtol=0, atol=1e-12)
    # the entries are the flat views again, which the kernels update
    owners = {t.untyped_storage().data_ptr() for t in ours_opt._buffers.values()}
    for p in ours.parameters():
        for key, value in ours_opt.state[p].items():
            if key != "step":
                assert value.untyped_storage().data_ptr() in owners
            else:
                assert value.untyped_storage().data_ptr() == ours_opt._steps.ctypes.data


@pytest.mark.parametrize("precision", ["full", "bfloat16", "8bit"])
@pytest.mark.parametrize("name, options", [EIGHT_CASES[0], EIGHT_CASES[3]], ids=["sgd", "adam"])
def test_a_cleared_state_continues_as_a_new_optimizer_in_every_precision(name, options, precision):
    x, y = wide_data()
    model, fresh_model = wide_network(), wide_network()
    opt = getattr(ft, name)(model.parameters(), state_precision=precision, **options)
    assert opt.state_precision == precision
    train(model, opt, x, y, 3)
    fresh_model.load_state_dict(model.state_dict())
    fresh = getattr(ft, name)(fresh_model.parameters(), state_precision=precision, **options)
    opt.state.clear()
    train(model, opt, x, y, 3)
    train(fresh_model, fresh, x, y, 3)
    assert max_difference(model, fresh_model) == 0
    for p, q in zip(model.parameters(), fresh_model.parameters()):
        assert opt.state[p].keys() == fresh.state[q].keys()
        assert all(torch.equal(opt.state[p][k], fresh.state[q][k]) for k in opt.state[p])


@pytest.mark.parametrize("precision", ["bfloat16", "8bit"])
def test_tensors_bound_in_compact_state_are_encoded_as_loading_them_encodes(precision):
    """Torch's names and full-precision values bound in the entries of a bfloat16 or
    8-bit optimizer are rounded or encoded as ``load_state_dict`` does with a torch
    state_dict of the same values.
    """
    x, y = wide_data()
    source = wide_network()
    theirs = torch.optim.Adam(source.parameters(), lr=1e-2, foreach=False)
    train(source, theirs, x, y, 3)
    models = []
    for how in ("bind", "load"):
        model = wide_network()
        model.load_state_dict(source.state_dict())
        opt = ft.Adam(model.parameters(), lr=1e-2, state_precision=precision)
        train(model, opt, x, y, 2)
        if how == "load":
            opt.load_state_dict(copy.deepcopy(theirs.state_dict()))
        else:
            for p, q in zip(model.parameters(), source.parameters()):
                for key, value in theirs.state[q].items():
                    opt.state[p][key] = value.clone()
        train(model, opt, x, y, 3)
        models.append((model, opt))
    (bound, bound_opt), (loaded, loaded_opt) = models
    assert max_difference(bound, loaded) == 0
    for p, q in zip(bound.parameters(), loaded.parameters()):
        assert bound_opt.state[p].keys() == loaded_opt.state[q].keys()
        for key, value in bound_opt.state[p].items():
            assert torch.equal(value, loaded_opt.state[q][key])


def test_state_entries_that_cannot_be_used_raise_before_any_write():
    x, y = data(torch.float64)
    model = network(torch.float64)
    opt = ft.Adam(model.parameters(), lr=1e-2)
    train(model, opt, x, y, 2)
    weight = model[0].weight
    good = {k: v.clone() for k, v in opt.state[weight].items()}
    bad = [
        ("exp_avg", torch.zeros(3), ValueError,
         r"opt.state\[p\]\['exp_avg'\] of parameter 0 \(24, 12\) is a torch.float32 tensor of "
         r"shape \(3,\): a state tensor bound in an entry must be a real floating-point "
         r"tensor of the parameter's shape \(24, 12\)"),
        ("exp_avg_sq", torch.zeros(24, 12, dtype=torch.int64), ValueError, "real floating"),
        ("exp_avg", [0.0], TypeError, "is a list"),
        ("step", torch.tensor(-1.0), ValueError,
         r"opt.state\[p\]\['step'\] of parameter 0 \(24, 12\) is a torch.float32 tensor of "
         r"shape \(\) \(-1.0\): a step must be a whole number of updates, 0 or more"),
        ("step", 2.5, ValueError, "whole number"),
    ]  # fmt: skip
    torch.nn.functional.cross_entropy(model(x), y).backward()
    for key, value, error, message in bad:
        params = [p.detach().clone() for p in model.parameters()]
        flat_state = {k: v.clone() for k, v in opt._buffers.items()}
        opt.state[weight][key] = value
        with pytest.raises(error, match=message):
            opt.step()
        assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params))
        assert all(torch.equal(opt._buffers[k], v) for k, v in flat_state.items())
        opt.state[weight][key] = good[key]
    del opt.state[weight]["step"]
    with pytest.raises(ValueError, match=r"holds \['exp_avg', 'exp_avg_sq'\] but no 'step'"):
        opt.step()
    opt.state[weight] = {k: v.clone() for k, v in good.items()}  # a plain dict: fine
    opt.step()
    assert opt.state[weight]["step"].item() == 3
    assert opt.state[weight]["exp_avg"] is opt._views[0]["exp_avg"]


def test_parameters_that_overlap_in_memory_are_refused():
    """A tie made through ``.data`` (two Parameters, one storage) would be untied by the
    move into the flat buffer; views of one tensor that do not overlap are moved.
    """
    encoder = torch.nn.Parameter(torch.ones(4, 3))
    decoder = torch.nn.Parameter(torch.zeros(4, 3))
    decoder.data = encoder.data
    other = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match=r"parameters 1 \(4, 3\) and 2 \(4, 3\) overlap in memory"):
        ft.SGD([other, encoder, decoder], lr=0.1)
    buffer = torch.zeros(10)
    halves = [torch.nn.Parameter(buffer[:6].view(2, 3)), torch.nn.Parameter(buffer[4:])]
    with pytest.raises(ValueError, match="use one Parameter object in both places|one Parameter"):
        ft.Adam(halves)
    apart = [torch.nn.Parameter(buffer[:6].view(2, 3)), torch.nn.Parameter(buffer[6:])]
    opt = ft.SGD(apart, lr=0.1)
    assert all(p.untyped_storage().data_ptr() == opt._flat.data[torch.float32].data_ptr()
               for p in apart)  # fmt: skip
    tied = torch.nn.Linear(3, 3)
    with pytest.warns(UserWarning, match="duplicate parameters"):  # torch's warning
        ft.SGD([tied.weight, tied.weight, tied.bias], lr=0.1)  # one Parameter twice: fine


def test_a_step_with_only_empty_groups_does_nothing_as_torchs():
    for module in (ft, torch.optim):
        opt = module.AdamW([{"params": []}], lr=0.01)
        opt.step()
        opt.zero_grad()
        assert opt.step(lambda: 1.5) == 1.5
        opt.load_state_dict(opt.state_dict())
        assert opt.state_dict()["state"] == {}


def test_gradients_are_the_flat_views_which_zero_grad_and_backward_reuse():
    """What docs/torch.md says: ``p.grad`` is the same view across ``zero_grad()`` and
    ``backward()``, so a gradient kept without ``.clone()`` is zeroed and then overwritten
    (torch's ``zero_grad()`` gives new tensors instead); a clone keeps its values.
    """
    model = network(torch.float64)
    opt = ft.SGD(model.parameters(), lr=0.1)
    x, y = data(torch.float64)
    kept, cloned = [], []
    for seed in (0, 1):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[seed::2]), y[seed::2]).backward()
        kept.append(model[0].weight.grad)
        cloned.append(model[0].weight.grad.clone())
    assert kept[0] is kept[1] is model[0].weight.grad
    assert torch.equal(kept[0], cloned[1]) and not torch.equal(cloned[0], cloned[1])
    opt.zero_grad()
    assert not kept[0].any() and cloned[0].any()


def test_sgd_momentum_switched_on_later_creates_the_buffer_as_torch():
    """Torch creates the momentum buffer at the first update with momentum, from the
    gradient (no dampening), for parameters already updated without it.
    """
    x, y = data(torch.float64)
    results = []
    for module in (ft, torch.optim):
        model = network(torch.float64)
        opt = module.SGD(model.parameters(), lr=0.05, momentum=0.0, dampening=0.3)
        assert not opt.state_dict()["state"]
        train(model, opt, x, y, 3)
        opt.param_groups[0]["momentum"] = 0.9
        train(model, opt, x, y, 4)
        results.append((model, opt.state_dict()["state"]))
    (ours, our_state), (theirs, their_state) = results
    assert max_difference(ours, theirs) <= 1e-12
    assert our_state.keys() == their_state.keys() == set(range(6))
    for index, entry in their_state.items():
        assert torch.allclose(our_state[index]["momentum_buffer"], entry["momentum_buffer"],
                              rtol=0, atol=1e-12)  # fmt: skip


@pytest.mark.parametrize("precision", ["full", "bfloat16"])
def test_a_momentum_buffer_bound_before_the_first_update_is_used_as_torchs(precision):
    """A warm start: torch's SGD finds the buffer in the entry and uses it
    (``0.9 * 5 + g``) instead of starting it from the gradient.
    """
    results = []
    for module, options in ((torch.optim, {}), (ft, {"state_precision": precision})):
        torch.manual_seed(0)
        p = torch.nn.Parameter(torch.randn(8))
        opt = module.SGD([p], lr=0.1, momentum=0.9, **options)
        opt.state[p]["momentum_buffer"] = torch.full_like(p, 5.0)
        for _ in range(2):
            opt.zero_grad()
            p.sum().backward()
            opt.step()
        results.append((p.detach().clone(), opt.state[p]["momentum_buffer"].float()))
    (ours, our_buffer), (theirs, their_buffer) = results[1], results[0]
    tolerance = 1e-6 if precision == "full" else 2e-2
    assert torch.allclose(our_buffer, their_buffer, rtol=tolerance)
    assert torch.allclose(ours, theirs, rtol=tolerance, atol=tolerance)
    assert torch.allclose(their_buffer, torch.full_like(their_buffer, 0.9 * (0.9 * 5 + 1) + 1))


def test_merging_a_dict_into_the_state_gives_a_plain_defaultdict():
    p = torch.nn.Parameter(torch.ones(3))
    opt = ft.Adam([p])
    p.sum().backward()
    opt.step()
    merged = {} | opt.state
    assert type(merged) is collections.defaultdict and merged[p] is opt.state[p]
    merged["new"]["x"] = 1  # a missing key is an empty dict, as in torch's
    assert "new" not in opt.state


def test_a_gradient_can_be_modified_in_place_with_autograd_enabled():
    results = []
    for module in (torch.optim, ft):
        p = torch.nn.Parameter(torch.ones(3))
        opt = module.SGD([p], lr=0.1)
        opt.zero_grad()
        (p * 2).sum().backward()
        p.grad.add_(p, alpha=0.01)  # outside no_grad: torch allows it
        opt.step()
        results.append(p.detach().clone())
    assert torch.equal(results[0], results[1])
