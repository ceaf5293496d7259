"""fastopt.torch: torch.optim's constructor, numerics, schedulers, zero_grad, clipping and
state_dicts, over flat buffers that backward writes in place.
"""

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


# -- what a reviewer found ---------------------------------------------------------------
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


def test_an_option_that_needs_new_state_mid_run_raises_before_any_write():
    model = network(torch.float64)
    params = list(model.parameters())
    opt = ft.SGD([{"params": params[:2], "momentum": 0.9}, {"params": params[2:]}], lr=0.1)
    x, y = data(torch.float64)
    train(model, opt, x, y, 2)
    opt.param_groups[1]["momentum"] = 0.9
    torch.nn.functional.cross_entropy(model(x), y).backward()
    before = [p.detach().clone() for p in params]
    with pytest.raises(RuntimeError, match=r"now needs the state \['momentum_buffer'\]"):
        opt.step()
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))


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
