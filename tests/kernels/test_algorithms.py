"""Each algorithm's home under fastopt.kernels: one loop source with one argument order for
both backends, named host scalars, and the optimizer classes built on them.
"""

import inspect

import numpy as np
import pytest

import fastopt
from fastopt.kernels import ALGORITHMS, host

STATE_PARAMETERS = {
    "sgd": ["momentum_buffer"],
    "adagrad": ["state_sum"],
    "rmsprop": ["square_avg", "grad_avg", "momentum_buffer"],
    "adam": ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
}
CLASSES = {
    "sgd": [fastopt.SGD],
    "adagrad": [fastopt.Adagrad],
    "rmsprop": [fastopt.RMSprop],
    "adam": [fastopt.Adam, fastopt.AdamW],
}


def parameters(function):
    return list(inspect.signature(function).parameters)


def kernel_order(algorithm):
    return [
        "param",
        "grad",
        *STATE_PARAMETERS[algorithm.name],
        "grad_scale",
        *algorithm.scalars._fields,
    ]


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_host_kernels_take_param_grad_state_grad_scale_then_the_named_scalars(name):
    algorithm = ALGORITHMS[name]
    assert len(STATE_PARAMETERS[name]) == len(algorithm.state)
    assert parameters(algorithm.loop) == kernel_order(algorithm)
    for compiled in host.KERNELS[name, "full"]:
        assert parameters(compiled.py_func) == kernel_order(algorithm)
    # grad_scale comes right after the state, wherever the state ends
    assert parameters(algorithm.loop).index("grad_scale") == 2 + len(algorithm.state)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_cuda_and_host_kernels_have_the_same_parameter_names(name, cuda_kernels):
    cuda_kernel = cuda_kernels.KERNELS[name, "full"]
    for compiled in host.KERNELS[name, "full"]:
        assert parameters(cuda_kernel.py_func) == parameters(compiled.py_func)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_host_scalars_are_named_fields_of_the_kernel_order(name, rng):
    algorithm = ALGORITHMS[name]
    for cls in CLASSES[name]:
        opt = cls(rng.standard_normal(10), lr=0.01)
        assert opt.algorithm is algorithm
        scalars = opt._scalars(0.01, 0.0, 3)
        assert type(scalars) is algorithm.scalars
        assert scalars._fields == algorithm.scalars._fields


def test_named_scalars_carry_the_step_dependent_values():
    adam = ALGORITHMS["adam"].host_scalars(
        lr=0.1,
        betas=(0.9, 0.99),
        eps=1e-8,
        weight_decay=0.5,
        decoupled_weight_decay=True,
        amsgrad=False,
        step=2,
    )
    assert adam.step_size == pytest.approx(0.1 / (1 - 0.9**2))
    assert adam.bias_correction2_sqrt == pytest.approx((1 - 0.99**2) ** 0.5)
    assert adam.decay_factor == pytest.approx(1 - 0.1 * 0.5) and adam.weight_decay == 0.0
    adagrad = ALGORITHMS["adagrad"].host_scalars(
        lr=0.1, lr_decay=0.5, weight_decay=0.0, eps=1e-10, step=3
    )
    assert adagrad.clr == pytest.approx(0.1 / 2)
    sgd = ALGORITHMS["sgd"].host_scalars(
        lr=0.1, weight_decay=0.0, momentum=0.9, dampening=0.25, nesterov=False, first_step=True
    )
    assert sgd.one_minus_dampening == 0.75 and sgd.first_step


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_the_loop_runs_as_plain_python_like_the_compiled_kernel(name, rng):
    """The loop source is the same for every backend; run uncompiled (one thread over all
    elements, the names bound to plain Python) it gives the compiled kernel's result.
    """
    from fastopt._jit import bind

    algorithm = ALGORITHMS[name]
    size = 33
    param, grad = rng.standard_normal(size), rng.standard_normal(size)
    state = [np.abs(rng.standard_normal(size)) for _ in algorithm.state]
    cls = CLASSES[name][0]
    opt = cls(param.copy(), lr=0.01)
    scalars = opt._scalars(0.01, 0.1, 2)
    python_loop = bind(algorithm.loop, f"{name}_python", element=algorithm.element)
    compiled = host.KERNELS[name, "full"][0]
    results = []
    for run in (python_loop, compiled):
        p, s = param.copy(), [a.copy() for a in state]
        run(p, grad, *s, 0.5, *scalars)
        results.append((p, s))
    (p1, s1), (p2, s2) = results
    np.testing.assert_array_equal(p1, p2)
    for a, b in zip(s1, s2):
        np.testing.assert_array_equal(a, b)
