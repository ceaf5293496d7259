"""``python -m fastopt bench``: step time against a bandwidth ceiling, NumPy and torch, side by
side in one process.

Every implementation runs one step per round, in a shuffled order, so the ratios are not
disturbed by the memory bandwidth drifting between processes. "stream" is a kernel with
exactly the update's memory traffic and trivial arithmetic: the ceiling.
"""

import json
import os
import platform
import random
import time

import numpy as np
from numba import prange

from .. import optim
from .._jit import kernel
from .._threading import get_num_threads, set_num_threads

# name -> (optimizer class name, options); the first word is the algorithm
CONFIGS = {
    "sgd": ("SGD", {"lr": 1e-3}),
    "sgd_momentum": ("SGD", {"lr": 1e-3, "momentum": 0.9}),
    "sgd_nesterov": ("SGD", {"lr": 1e-3, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}),
    "adagrad": ("Adagrad", {"lr": 1e-2}),
    "rmsprop": ("RMSprop", {"lr": 1e-2}),
    "rmsprop_centered": ("RMSprop", {"lr": 1e-2, "centered": True}),
    "adam": ("Adam", {"lr": 1e-3}),
    "adamw": ("AdamW", {"lr": 1e-3}),
    "amsgrad": ("Adam", {"lr": 1e-3, "amsgrad": True}),
}
# floats per element a step reads and writes
TRAFFIC = {
    "sgd": (2, 1),
    "sgd_momentum": (3, 2),
    "sgd_nesterov": (3, 2),
    "adagrad": (3, 2),
    "rmsprop": (3, 2),
    "rmsprop_centered": (4, 3),
    "adam": (4, 3),
    "adamw": (4, 3),
    "amsgrad": (5, 4),
}
TORCH_FUSED = {"SGD", "Adagrad", "Adam", "AdamW"}


@kernel(parallel=True)
def _stream_w1(g, a):
    for i in prange(a.size):
        a[i] = a[i] + g[i]


@kernel(parallel=True)
def _stream_w2(g, a, b):
    for i in prange(a.size):
        s = g[i]
        a[i] = a[i] + s
        b[i] = b[i] + s


@kernel(parallel=True)
def _stream_w3(g, a, b, c):
    for i in prange(a.size):
        s = g[i]
        a[i] = a[i] + s
        b[i] = b[i] + s
        c[i] = c[i] + s


@kernel(parallel=True)
def _stream_w4(g, a, b, c, d):
    for i in prange(a.size):
        s = g[i]
        a[i] = a[i] + s
        b[i] = b[i] + s
        c[i] = c[i] + s
        d[i] = d[i] + s


_STREAMS = {1: _stream_w1, 2: _stream_w2, 3: _stream_w3, 4: _stream_w4}


@kernel(parallel=True)
def _stream_compact_1(g, p, a):
    for i in prange(p.size):
        p[i] = p[i] + g[i]
        a[i] = a[i] + 1


@kernel(parallel=True)
def _stream_compact_2(g, p, a, b):
    for i in prange(p.size):
        p[i] = p[i] + g[i]
        a[i] = a[i] + 1
        b[i] = b[i] + 1


@kernel(parallel=True)
def _stream_compact_3(g, p, a, b, c):
    for i in prange(p.size):
        p[i] = p[i] + g[i]
        a[i] = a[i] + 1
        b[i] = b[i] + 1
        c[i] = c[i] + 1


_COMPACT_STREAMS = {1: _stream_compact_1, 2: _stream_compact_2, 3: _stream_compact_3}
_STATE_ITEMSIZE = {"bfloat16": 2, "8bit": 1}


def stream_step(name, grad, precision="full"):
    """A callable running the traffic-matched kernel for ``name``: it reads the gradient
    and read-modify-writes as many arrays as the update writes; with compact state the
    state arrays have the state's element size (the 8-bit scales, 4 bytes per 256
    elements, are left out).
    """
    _, writes = TRAFFIC[name]
    if precision == "full":
        arrays = [np.zeros_like(grad) for _ in range(writes)]
        step = _STREAMS[writes]
        return lambda: step(grad, *arrays)
    word = np.uint16 if precision == "bfloat16" else np.uint8
    param = np.zeros_like(grad)
    states = [np.zeros(grad.size, word) for _ in range(writes - 1)]
    if not states:  # plain SGD keeps no state: its traffic is the parameters' alone
        return lambda: _stream_w1(grad, param)
    compact = _COMPACT_STREAMS[len(states)]
    return lambda: compact(grad, param, *states)


def bytes_per_step(name, size, dtype, precision="full"):
    """Bytes a step reads and writes: the gradient, the parameters and the state."""
    reads, writes = TRAFFIC[name]
    itemsize = np.dtype(dtype).itemsize
    if precision == "full":
        return (reads + writes) * size * itemsize
    states = writes - 1
    state_bytes = 2 * states * size * _STATE_ITEMSIZE[precision]
    if precision == "8bit":
        state_bytes += 2 * states * -(-size // 256) * itemsize
    return 3 * size * itemsize + state_bytes


def unsupported(optimizers, dtype="float32", precision="full"):
    """The optimizers of ``optimizers`` that cannot keep their state in ``precision``.

    Each is built once on a few elements with its benchmark options, so that a refusal
    comes before anything is timed.

    Parameters
    ----------
    optimizers : iterable of str
        Names from :data:`CONFIGS`.
    dtype : str or numpy dtype, default "float32"
        The buffer dtype of the benchmark.
    precision : {"full", "bfloat16", "8bit"}, default "full"
        The ``state_precision`` to check.

    Returns
    -------
    dict of str to str
        Name to the optimizer's own reason, in the order given; empty when every one works.
    """
    refused = {}
    for name in optimizers:
        cls, options = CONFIGS[name]
        try:
            getattr(optim, cls)(np.zeros(8, dtype), **options, state_precision=precision)
        except (TypeError, ValueError) as error:
            refused[name] = str(error)
    return refused


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
        p -= lr / (1 - 0.9**t) * m / (np.sqrt(v) / np.sqrt(1 - 0.999**t) + 1e-8)


def numpy_stepper(name, p, g):
    _, options = CONFIGS[name]
    state, counter = {}, [0]

    def step():
        counter[0] += 1
        numpy_step(name, options, p, g, state, counter[0])

    return step


def fastopt_stepper(name, p, g, precision="full"):
    cls, options = CONFIGS[name]
    opt = getattr(optim, cls)(p, **options, state_precision=precision)
    return lambda: opt.step(g)


def torch_stepper(torch, name, p, g, mode):
    """``torch.optim`` on one flat tensor with ``fused=True`` or ``foreach=True``; None
    when torch has no such implementation.
    """
    cls, options = CONFIGS[name]
    if mode == "fused" and cls not in TORCH_FUSED:
        return None
    tp = torch.nn.Parameter(torch.from_numpy(p.copy()))
    tp.grad = torch.from_numpy(g.copy())
    opt = getattr(torch.optim, cls)([tp], **options, **{mode: True})
    return opt.step


def import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def measure(name, size, dtype, rounds, *, numpy=True, torch=None, seed=0, precision="full"):
    """Median step time of each implementation, alternated round by round; with compact
    state also fastopt's full-precision step ("fastopt_full").
    """
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(size).astype(dtype)
    g = (rng.standard_normal(size) * 1e-3).astype(dtype)
    impls = {
        "fastopt": fastopt_stepper(name, p.copy(), g, precision),
        "stream": stream_step(name, g, precision),
    }
    if precision != "full":
        impls["fastopt_full"] = fastopt_stepper(name, p.copy(), g)
    if numpy:
        impls["numpy"] = numpy_stepper(name, p.copy(), g)
    if torch is not None:
        for mode in ("fused", "foreach"):
            step = torch_stepper(torch, name, p, g, mode)
            if step is not None:
                impls[f"torch_{mode}"] = step
    for step in impls.values():
        step()
        step()
    times = {key: [] for key in impls}
    order = list(impls)
    for _ in range(rounds):
        random.shuffle(order)
        for key in order:
            start = time.perf_counter()
            impls[key]()
            times[key].append(time.perf_counter() - start)
    median = {key: float(np.median(values)) for key, values in times.items()}
    nbytes = bytes_per_step(name, size, dtype, precision)
    row = {
        "optimizer": name,
        "size": size,
        "dtype": np.dtype(dtype).name,
        "state_precision": precision,
        "rounds": rounds,
        "bytes_per_step": nbytes,
        "median_s": median,
        "gbps": nbytes / median["fastopt"] / 1e9,
        "fraction_of_stream": median["stream"] / median["fastopt"],
    }
    for key in median:
        if key not in ("fastopt", "stream"):
            row[f"speedup_vs_{key}"] = median[key] / median["fastopt"]
    return row


def cpu_model():
    """The processor's name (``/proc/cpuinfo`` on Linux), else what platform says."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def stream_seconds(name, grad, rounds=20):
    """Median time of the stream kernel with the traffic of ``name``'s update, warmed."""
    step = stream_step(name, grad)
    step()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def stream_bandwidth(size=10_000_000, rounds=7):
    """GB/s of the stream kernel with Adam's traffic (read 4 arrays, write 3), float32,
    the median of ``rounds`` runs: the machine's ceiling for the update kernels.
    """
    seconds = stream_seconds("adam", np.ones(size, np.float32), rounds)
    return bytes_per_step("adam", size, np.float32) / seconds / 1e9


def machine_info(torch=None, bandwidth=True):
    """What makes figures from two machines comparable: CPU, cores, threads, numba's
    threading layer, the stream kernel's bandwidth, and the versions.
    """
    import numba

    from ..kernels.host import HOST

    info = {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "threads": get_num_threads(),
        "threading_layer": HOST.threads.start(),
    }
    if bandwidth:
        info["stream_gbps"] = round(stream_bandwidth(), 1)
    info.update(
        python=platform.python_version(),
        numpy=np.__version__,
        numba=numba.__version__,
        torch=None if torch is None else torch.__version__,
        fastopt=__import__("fastopt").__version__,
    )
    return info


def run(
    sizes=(1e3, 1e5, 1e7),
    optimizers=tuple(CONFIGS),
    dtype="float32",
    rounds=15,
    threads=None,
    numpy=True,
    use_torch=True,
    json_path=None,
    print_fn=print,
    precision="full",
    skip_unsupported=False,
):
    """Time every optimizer at every size, print the table and return (and write) the rows.

    Every (optimizer, ``precision``) pair is checked before anything is timed (see
    :func:`unsupported`): an optimizer that cannot keep its state in ``precision`` raises
    ValueError, naming it and why, or with ``skip_unsupported`` is left out with a printed
    note (and listed under ``"skipped"`` in the result).
    """
    refused = unsupported(optimizers, dtype, precision)
    if refused and not skip_unsupported:
        name, why = next(iter(refused.items()))
        raise ValueError(
            f"--optimizers {name} with --precision {precision}: not supported ({_one_line(why)})"
        )
    optimizers = [name for name in optimizers if name not in refused]
    torch = import_torch() if use_torch else None
    if threads:
        set_num_threads(threads)
        if torch is not None:
            torch.set_num_threads(threads)
    info = machine_info(torch)
    print_fn("fastopt bench: " + " ".join(f"{k}={v!r}" if " " in str(v) else f"{k}={v}"
                                           for k, v in info.items()))  # fmt: skip
    print_fn(
        "(medians of steps alternated with the other implementations in this process; "
        "xN = their time / fastopt's)"
    )
    for name, why in refused.items():
        print_fn(f"skipped {name}: it does not support --precision {precision} ({_one_line(why)})")
    compact = precision != "full"
    print_fn(
        f"{'optimizer':17s} {'size':>9s} {'state':>8s} {'fastopt ms':>11s} {'GB/s':>6s} "
        f"{'of stream':>9s} {'x numpy':>8s} {'x torch fused':>13s} {'x torch foreach':>15s}"
        + (f" {'x full':>7s}" if compact else "")
    )
    rows = []
    for size in (int(s) for s in sizes):
        for name in optimizers:
            n = rounds * (20 if size <= 1e5 else 1 if size <= 1e7 else 1 / 3)
            row = measure(name, size, np.dtype(dtype), max(5, int(n)), numpy=numpy, torch=torch,
                          precision=precision)  # fmt: skip
            rows.append(row)
            cell = lambda k: f"{row[k]:.2f}" if k in row else "-"  # noqa: E731, B023
            print_fn(
                f"{name:17s} {size:9d} {precision:>8s} {row['median_s']['fastopt'] * 1e3:11.4f} "
                f"{row['gbps']:6.1f} {row['fraction_of_stream'] * 100:8.0f}% "
                f"{cell('speedup_vs_numpy'):>8s} {cell('speedup_vs_torch_fused'):>13s} "
                f"{cell('speedup_vs_torch_foreach'):>15s}"
                + (f" {cell('speedup_vs_fastopt_full'):>7s}" if compact else "")
            )
    skipped = {name: _one_line(why) for name, why in refused.items()}
    result = {"header": info, "rows": rows, "skipped": skipped}
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=1)
    return result


def _one_line(text):
    return " ".join(str(text).split())
