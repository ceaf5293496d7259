"""Shared pieces of the benchmarks: data, traffic-matched bandwidth kernels, NumPy and torch
implementations of the same updates."""
import numpy as np
from numba import njit, prange

# floats moved per element by one step: (reads, writes)
TRAFFIC = {
    "sgd": (2, 1), "sgd_momentum": (3, 2), "sgd_nesterov": (3, 2),
    "adagrad": (3, 2), "rmsprop": (3, 2), "rmsprop_centered": (4, 3),
    "adam": (4, 3), "adamw": (4, 3), "amsgrad": (5, 4),
}

# name -> (fastopt class, options, torch class, torch options)
CONFIGS = {
    "sgd": ("SGD", {"lr": 1e-3}, {}),
    "sgd_momentum": ("SGD", {"lr": 1e-3, "momentum": 0.9}, {}),
    "sgd_nesterov": ("SGD", {"lr": 1e-3, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}, {}),
    "adagrad": ("Adagrad", {"lr": 1e-2}, {}),
    "rmsprop": ("RMSprop", {"lr": 1e-2}, {}),
    "rmsprop_centered": ("RMSprop", {"lr": 1e-2, "centered": True}, {}),
    "adam": ("Adam", {"lr": 1e-3}, {}),
    "adamw": ("AdamW", {"lr": 1e-3}, {}),
    "amsgrad": ("Adam", {"lr": 1e-3, "amsgrad": True}, {}),
}
TORCH_HAS_FUSED = {"SGD", "Adagrad", "Adam", "AdamW"}


_STREAM = {"error_model": "numpy", "cache": True, "parallel": True}


@njit(**_STREAM)
def stream_r2w1(a, g):
    for i in prange(a.size):
        a[i] = a[i] + g[i]


@njit(**_STREAM)
def stream_r3w2(a, b, g):
    for i in prange(a.size):
        s = g[i]
        a[i] = a[i] + s
        b[i] = b[i] + s


@njit(**_STREAM)
def stream_r4w3(a, b, c, g):
    for i in prange(a.size):
        s = g[i]
        a[i] = a[i] + s
        b[i] = b[i] + s
        c[i] = c[i] + s


@njit(**_STREAM)
def stream_r5w4(a, b, c, d, g):
    for i in prange(a.size):
        s = g[i]
        a[i] = a[i] + s
        b[i] = b[i] + s
        c[i] = c[i] + s
        d[i] = d[i] + s


STREAMS = {(2, 1): stream_r2w1, (3, 2): stream_r3w2, (4, 3): stream_r4w3, (5, 4): stream_r5w4}


def stream_step(name, size, dtype, grad):
    """A zero-argument callable running the traffic-matched kernel for ``name``: it reads
    the gradient and read-modify-writes as many arrays as the update writes."""
    reads, writes = TRAFFIC[name]
    arrays = tuple(np.zeros(size, dtype) for _ in range(writes))
    kernel = STREAMS[(reads, writes)]
    return lambda: kernel(*arrays, grad)


def numpy_step(name, options, p, g, state, t):
    """A straightforward NumPy implementation (temporaries and all), as users write it."""
    lr = options["lr"]
    if name.startswith("sgd"):
        wd, mu = options.get("weight_decay", 0), options.get("momentum", 0)
        if wd:
            g = g + wd * p
        if mu:
            buf = state.setdefault("buf", g.copy())
            if t > 1:
                buf *= mu
                buf += g
            g = g + mu * buf if options.get("nesterov") else buf
        p -= lr * g
    elif name == "adagrad":
        s = state.setdefault("sum", np.zeros_like(p))
        s += g * g
        p -= lr * g / (np.sqrt(s) + 1e-10)
    elif name.startswith("rmsprop"):
        v = state.setdefault("v", np.zeros_like(p))
        v[:] = 0.99 * v + 0.01 * g * g
        if options.get("centered"):
            ga = state.setdefault("ga", np.zeros_like(p))
            ga[:] = 0.99 * ga + 0.01 * g
            p -= lr * g / (np.sqrt(v - ga * ga) + 1e-8)
        else:
            p -= lr * g / (np.sqrt(v) + 1e-8)
    else:
        m = state.setdefault("m", np.zeros_like(p))
        v = state.setdefault("v", np.zeros_like(p))
        if name == "adamw":
            p *= 1 - lr * 1e-2
        m[:] = 0.9 * m + 0.1 * g
        v[:] = 0.999 * v + 0.001 * g * g
        if options.get("amsgrad"):
            vmax = state.setdefault("vmax", np.zeros_like(p))
            np.maximum(vmax, v, out=vmax)
            v = vmax
        denom = np.sqrt(v) / np.sqrt(1 - 0.999 ** t) + 1e-8
        p -= lr / (1 - 0.9 ** t) * m / denom


def torch_optimizer(torch, name, size, dtype, rng, mode):
    """A torch optimizer over one flat tensor; mode is 'fused' or 'foreach'."""
    cls, options, _ = CONFIGS[name]
    tp = torch.nn.Parameter(torch.from_numpy(rng.standard_normal(size).astype(dtype)))
    tp.grad = torch.from_numpy(rng.standard_normal(size).astype(dtype))
    kwargs = {"fused": True} if mode == "fused" else {"foreach": True}
    return getattr(torch.optim, cls)([tp], **options, **kwargs)
