"""fastopt.torch against torch.optim (fused, foreach) on a torch model of about 10M parameters.

Usage: python bench/torch_model.py [--hidden 1792] [--rounds 30] [--precision 8bit] [--json FILE]

Each implementation steps its own copy of the model with the same gradients; steps are
alternated round by round in one process and the medians compared. Also measured: what
the gradient checks cost per step (fastopt.torch looks at every parameter's ``.grad`` and
storage), and a training step (zero_grad, forward, backward, step) after
``opt.zero_grad()`` (gradients stay in the flat buffer) and after ``model.zero_grad()``
(every ``.grad`` set to None: the next backward makes new tensors, which are copied into
the flat buffer). With ``--precision bfloat16`` or ``8bit`` fastopt.torch keeps compact
state, and its full-precision step is timed too (``x_fastopt_full``), with the bytes of
state each holds.
"""

import argparse
import json
import random
import statistics
import time

import torch

import fastopt.torch as ft

CONFIGS = {
    "sgd_momentum": ("SGD", {"lr": 1e-3, "momentum": 0.9}),
    "adagrad": ("Adagrad", {"lr": 1e-2}),
    "rmsprop": ("RMSprop", {"lr": 1e-3}),
    "adam": ("Adam", {"lr": 1e-3}),
    "adamw": ("AdamW", {"lr": 1e-3}),
}
FUSED = {"SGD", "Adagrad", "Adam", "AdamW"}


def model(hidden, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(1024, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, 1024),
    )  # fmt: skip


def with_gradients(hidden):
    net = model(hidden)
    x = torch.randn(32, 1024, generator=torch.Generator().manual_seed(1))
    net(x).square().mean().backward()
    return net


def median_times(steps, rounds):
    times = {name: [] for name in steps}
    order = list(steps)
    for step in steps.values():
        step()
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def state_bytes(opt):
    """Bytes of the optimizer's state buffers (torch's ``step`` counters left out)."""
    return sum(b.numel() * b.element_size() for b in opt._buffers.values())


def compare(name, hidden, rounds, precision="full"):
    cls, options = CONFIGS[name]
    steps, memory = {}, {}
    ours = with_gradients(hidden)
    opt = getattr(ft, cls)(ours.parameters(), **options, state_precision=precision)
    steps["fastopt"] = opt.step
    if precision != "full":
        full = getattr(ft, cls)(with_gradients(hidden).parameters(), **options)
        steps["fastopt_full"] = full.step
    for step in steps.values():
        step()  # state allocated
    memory["fastopt"] = state_bytes(opt)
    if precision != "full":
        memory["fastopt_full"] = state_bytes(full)
    modes = ("fused", "foreach") if cls in FUSED else ("foreach",)
    for mode in modes:
        theirs = with_gradients(hidden)
        steps[f"torch_{mode}"] = getattr(torch.optim, cls)(
            theirs.parameters(), **options, **{mode: True}
        ).step
    size = sum(p.numel() for p in ours.parameters())
    median = median_times(steps, rounds)
    row = {
        "optimizer": name,
        "parameters": size,
        "state_precision": opt.state_precision,
        "state_bytes": memory,
        "median_ms": {k: v * 1e3 for k, v in median.items()},
    }
    for key in median:
        if key != "fastopt":
            row[f"x_{key}"] = median[key] / median["fastopt"]
    return row


def checks_and_training(hidden, rounds):
    """The per-step cost of the gradient checks, and a training step after either zero_grad."""
    net = with_gradients(hidden)
    opt = ft.Adam(net.parameters(), lr=1e-3)
    flat = opt._flat
    checks = median_times({"checks": flat.refresh}, rounds * 10)["checks"]
    x = torch.randn(32, 1024, generator=torch.Generator().manual_seed(2))

    def train(zero):
        def step():
            zero()
            net(x).square().mean().backward()
            opt.step()

        return step

    training = median_times(
        {"opt.zero_grad": train(opt.zero_grad), "model.zero_grad": train(net.zero_grad)},
        rounds,
    )
    return {
        "parameters": sum(p.numel() for p in net.parameters()),
        "tensors": len(flat.params),
        "checks_us": checks * 1e6,
        "training_ms": {k: v * 1e3 for k, v in training.items()},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1792)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--optimizers", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--precision", choices=["full", "bfloat16", "8bit"], default="full",
                        help="state_precision of fastopt.torch's optimizers")  # fmt: skip
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = []
    for name in args.optimizers:
        row = compare(name, args.hidden, args.rounds, args.precision)
        rows.append(row)
        ratios = "  ".join(f"{k[2:]} {v:.2f}x" for k, v in row.items() if k.startswith("x_"))
        print(f"{name:13s} {row['parameters']:>9d} params  fastopt {row['state_precision']} "
              f"{row['median_ms']['fastopt']:8.3f} ms  {ratios}  state "
              f"{row['state_bytes']['fastopt'] / 2**20:.1f} MiB")  # fmt: skip
    extra = checks_and_training(args.hidden, args.rounds)
    training = extra["training_ms"]
    print(f"gradient checks: {extra['checks_us']:.1f} us per step for {extra['tensors']} "
          f"tensors; training step after opt.zero_grad {training['opt.zero_grad']:.2f} ms, "
          f"after model.zero_grad {training['model.zero_grad']:.2f} ms")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "checks": extra}, f, indent=1)


if __name__ == "__main__":
    main()
