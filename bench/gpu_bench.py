"""GPU step times: every optimizer at 1e6/1e8/1e9 parameters against a device copy and torch.

    python bench/gpu_bench.py [--sizes 1e6 1e8 1e9] [--dtype float32] [--repeat 20]
                              [--json results.json]

For each size it measures, in one process, a device-to-device copy of the parameter buffer
(the bandwidth ceiling: 2 words moved per element), then each optimizer's ``step(grad)``
on device buffers, and torch's fused CUDA Adam and AdamW on the same number of parameters
when torch with CUDA is installed. Reported per row: milliseconds per step (the median of
5 timings, each the wall time of back-to-back steps ended by a device synchronisation, so
launch overhead counts; at least ``repeat`` steps and enough for about 10 GB of traffic),
achieved GB/s counting the words each algorithm must move per element (Adam reads p, g,
m, v and writes p, m, v: 7), the fraction of the copy's GB/s, and for Adam and AdamW the
ratio of torch fused's step time to fastopt's (> 1: fastopt is faster).

Buffers are released between phases; 1e9 float32 Adam needs 16 GB of device memory. Under
numba-cuda's simulator (``NUMBA_ENABLE_CUDASIM=1``) pass tiny ``--sizes``: it is then a
smoke test, and its timings mean nothing.
"""

import argparse
import gc
import json
import time

import numpy as np

import fastopt
from fastopt.kernels import cuda as kernels

OPTIMIZERS = [  # (label, class, options, words moved per element)
    ("SGD momentum", "SGD", {"momentum": 0.9}, 5),
    ("Adagrad", "Adagrad", {}, 5),
    ("RMSprop", "RMSprop", {}, 5),
    ("Adam", "Adam", {}, 7),
    ("AdamW", "AdamW", {}, 7),
]


def timed(step, sync, repeat):
    step()  # compiles (or loads from the cache) and warms up
    sync()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeat):
            step()
        sync()
        times.append((time.perf_counter() - start) / repeat)
    return float(np.median(times))


def steps_for(size, itemsize, repeat):
    """At least ``repeat`` steps, and enough for about 10 GB of traffic per timing (on a
    GPU: the simulator runs exactly ``repeat``).
    """
    if kernels.simulated():
        return repeat
    return max(repeat, min(2000, int(1e10 // (7 * size * itemsize))))


def release(cuda):
    """Free device memory now: numba defers frees until many are pending."""
    gc.collect()
    deallocations = getattr(cuda.current_context(), "deallocations", None)
    if deallocations is not None:
        deallocations.clear()


def torch_cuda():
    try:
        import torch
    except ImportError:
        return None, "torch not installed"
    if not torch.cuda.is_available():
        return None, f"torch {torch.__version__} has no usable CUDA device"
    return torch, None


def bench_size(size, dtype, repeat, torch):
    cuda = kernels.cuda
    sync = cuda.synchronize
    itemsize = np.dtype(dtype).itemsize
    repeat = steps_for(size, itemsize, repeat)
    rows = []
    src, dst = kernels.CUDA.full(size, 1.0, dtype), kernels.CUDA.empty(size, dtype)
    seconds = timed(lambda: dst.copy_to_device(src), sync, repeat)  # noqa: F821
    copy_gbs = 2 * size * itemsize / seconds / 1e9
    rows.append({"size": size, "name": "copy", "ms": seconds * 1e3, "gbs": copy_gbs})
    del src, dst
    release(cuda)
    grad = kernels.CUDA.full(size, 1e-3, dtype)
    for label, name, options, words in OPTIMIZERS:
        param = kernels.CUDA.full(size, 1.0, dtype)
        opt = getattr(fastopt, name)(param, lr=1e-3, **options)
        seconds = timed(lambda: opt.step(grad), sync, repeat)  # noqa: B023, F821
        gbs = words * size * itemsize / seconds / 1e9
        rows.append(
            {
                "size": size,
                "name": label,
                "ms": seconds * 1e3,
                "gbs": gbs,
                "of_copy": gbs / copy_gbs,
            }
        )
        del opt, param
        release(cuda)
    del grad
    release(cuda)
    if torch is not None:
        for name, row in (("Adam", rows[-2]), ("AdamW", rows[-1])):
            p = torch.nn.Parameter(
                torch.ones(size, dtype=getattr(torch, np.dtype(dtype).name), device="cuda")
            )
            p.grad = torch.full_like(p, 1e-3)
            opt = getattr(torch.optim, name)([p], lr=1e-3, fused=True)
            seconds = timed(opt.step, torch.cuda.synchronize, repeat)
            row["torch_fused_ms"] = seconds * 1e3
            row["vs_torch_fused"] = seconds * 1e3 / row["ms"]
            del opt, p
            gc.collect()
            torch.cuda.empty_cache()
    return rows


def size_label(size):
    exponent = len(str(size)) - 1
    return f"1e{exponent}" if size == 10**exponent else str(size)


HEADER = (
    f"{'size':>6}  {'step':<13} {'ms/step':>9} {'GB/s':>8} {'of copy':>8} "
    f"{'torch fused ms':>15} {'torch/fastopt':>14}"
)


def table(rows):
    lines = []
    for r in rows:
        of_copy = f"{r['of_copy']:.0%}" if "of_copy" in r else ""
        torch_ms = f"{r['torch_fused_ms']:.3f}" if "torch_fused_ms" in r else ""
        ratio = f"{r['vs_torch_fused']:.2f}x" if "vs_torch_fused" in r else ""
        lines.append(
            f"{size_label(r['size']):>6}  {r['name']:<13} {r['ms']:>9.3f} "
            f"{r['gbs']:>8.1f} {of_copy:>8} {torch_ms:>15} {ratio:>14}"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["1e6", "1e8", "1e9"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    from fastopt.kernels.backend import cuda_backend

    cuda_backend()  # a clear error without numba-cuda or a GPU
    device = kernels.cuda.get_current_device()
    name = getattr(device, "name", b"?")
    name = name.decode() if isinstance(name, bytes) else str(name)
    torch, why_not = torch_cuda()
    print(
        f"fastopt {fastopt.__version__} GPU benchmark: {name}, {args.dtype}, "
        f"{args.repeat} steps per timing"
    )
    if kernels.simulated():
        print("running under the CUDA simulator: timings mean nothing")
    if why_not:
        print(f"torch fused comparison skipped: {why_not}")
    rows = []
    print(HEADER)
    for size in (int(float(s)) for s in args.sizes):
        size_rows = bench_size(size, np.dtype(args.dtype), args.repeat, torch)
        rows.extend(size_rows)
        print(table(size_rows), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "dtype": args.dtype, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
