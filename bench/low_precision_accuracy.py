"""Accuracy of compact optimizer state: the same training run with every ``state_precision``.

Usage: python bench/low_precision_accuracy.py [--quick] [--precisions full bfloat16 ...]
       [--models digits teacher] [--out docs/]

Two models, trained in float32 with mini-batches, once per optimizer and state precision,
from the same initialisation and with the same batch order:

* ``digits``: the bundled digits network of ``fastopt.cli.demo`` (MLP 64-64-10, 4,810
  parameters, 1,348 training / 449 test images), with every optimizer at the demo's
  settings, for 30 epochs of batches of 64.
* ``teacher``: an MLP 784-1024-256-10 (1,068,810 parameters) trained on a synthetic
  teacher-student task (:func:`teacher_data`: inputs near a random 32-dimensional
  subspace of R^784, labels drawn from the softmax of a fixed random tanh network of the
  latent vector, so that even the teacher is right on only about 78% of the test set),
  100,000 training / 10,000 test samples, 2,000 steps of batches of 128 (about 2.6
  epochs), with Adam, AdamW and SGD with momentum.

For each run: the loss curve, the final loss on the whole training set (not the last
mini-batch), the test loss and the test accuracy; each compact precision is compared with
full-precision state against the targets (final training loss within 2% relative, test
accuracy within 0.5 points). For scale, one more full-precision run per optimizer uses
another batch order (same initialisation): the spread that batch order alone gives.
Also recorded, for each state buffer, the median of its absolute values at each point of
the curve, and the fractions of its elements that the last step left unchanged and that
it decreased (with bfloat16 state and beta2 = 0.999, Adam's second moment cannot
decrease: a 0.1% decrease is below half a bfloat16 ulp).

Writes ``low-precision-accuracy.json`` (every figure and curve) and ``low-precision.png``
(the curves) into ``--out`` and prints the table. ``--quick``: 3 epochs of digits, and
100 steps of Adam only on a small teacher data set, for smoke tests (the targets mean
nothing there).
The functions take sizes as arguments, so a test can run them on tiny problems.

The optimizer step runs on one thread (``--threads``, default 1): it takes about 0.5 ms
here at 1M parameters, and when its Numba threads alternate with OpenBLAS's (which spin
for a while after each matmul) on two cores, a training step takes three times as long.
The update is element-wise, so the thread count does not change the results.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

import fastopt
from fastopt.cli import demo
from fastopt.kernels.precision import PRECISIONS

LOSS_TARGET = 0.02  # relative difference of the final training loss
ACCURACY_TARGET = 0.5  # points of test accuracy

DIGITS_OPTIMIZERS = {
    "adam": demo.OPTIMIZERS["adam"],
    "adamw": demo.OPTIMIZERS["adamw"],
    "sgd_momentum": demo.OPTIMIZERS["sgd"],
    "rmsprop": demo.OPTIMIZERS["rmsprop"],
    "adagrad": demo.OPTIMIZERS["adagrad"],
}
TEACHER_OPTIMIZERS = {
    "adam": (fastopt.Adam, {"lr": 1e-3}),
    "adamw": (fastopt.AdamW, {"lr": 1e-3, "weight_decay": 1e-2}),
    "sgd_momentum": (fastopt.SGD, {"lr": 0.05, "momentum": 0.9}),
}

FULL = {
    "digits": {"epochs": 30, "batch_size": 64},
    "teacher": {"steps": 2000, "batch_size": 128, "n_train": 100_000, "n_test": 10_000,
                "eval_every": 100, "curve_samples": 10_000},
}  # fmt: skip
QUICK = {
    "digits": {"epochs": 3, "batch_size": 64},
    "teacher": {"steps": 100, "batch_size": 128, "n_train": 4_000, "n_test": 1_000,
                "eval_every": 25, "curve_samples": 1_000},
}  # fmt: skip
QUICK_OPTIMIZERS = {"teacher": ["adam"]}  # the default lists, unless --optimizers is given


# -- models ------------------------------------------------------------------------------
def init_mlp(sizes, dtype=np.float32, seed=0):
    """A ReLU MLP with layer widths ``sizes`` in a FlatParams (W1, b1, W2, b2, ...; He
    initialisation, the last layer scaled by 1/sqrt(fan-in)); biases in group "bias".
    """
    rng = np.random.default_rng(seed)
    arrays, last = {}, len(sizes) - 1
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), 1):
        gain = 1.0 if i == last else 2.0
        arrays[f"W{i}"] = rng.standard_normal((n_in, n_out)) * np.sqrt(gain / n_in)
        arrays[f"b{i}"] = np.zeros(n_out)
    biases = [f"b{i}" for i in range(1, last + 1)]
    return fastopt.FlatParams(arrays, dtype=dtype, groups={"bias": biases})


def mlp_forward(params, x):
    """The activations of every layer (the input first, the logits last)."""
    layers = len(params) // 2
    acts = [x]
    for i in range(1, layers + 1):
        z = acts[-1] @ params[f"W{i}"]
        z += params[f"b{i}"]
        if i < layers:
            np.maximum(z, 0, out=z)
        acts.append(z)
    return acts


def mlp_loss_and_grad(fp, x, y):
    """Mean cross-entropy of the MLP on (x, y); writes the gradient into ``fp.grads``."""
    p, g = fp.params, fp.grads
    acts = mlp_forward(p, x)
    loss, probs = demo.softmax_cross_entropy(acts[-1], y)
    delta = probs
    delta[np.arange(len(y)), y] -= 1
    delta /= len(y)
    for i in range(len(acts) - 1, 0, -1):
        np.matmul(acts[i - 1].T, delta, out=g[f"W{i}"])
        g[f"b{i}"][:] = delta.sum(0)
        if i > 1:
            delta = delta @ p[f"W{i}"].T
            delta *= acts[i - 1] > 0
    return float(loss)


def mlp_evaluate(fp, x, y, chunk=10_000):
    """(mean cross-entropy, accuracy) on the whole of (x, y), in chunks."""
    total, correct = 0.0, 0
    for begin in range(0, len(y), chunk):
        logits = mlp_forward(fp.params, x[begin : begin + chunk])[-1]
        yb = y[begin : begin + chunk]
        total += float(demo.softmax_cross_entropy(logits, yb)[0]) * len(yb)
        correct += int((logits.argmax(1) == yb).sum())
    return total / len(y), correct / len(y)


def teacher_data(n_train, n_test, n_in=784, n_latent=32, n_hidden=64, n_classes=10,
                 noise=0.5, seed=0):  # fmt: skip
    """A synthetic classification task with a known best answer.

    Each sample has a latent vector z ~ N(0, I_n_latent); the input is ``z @ A`` plus
    Gaussian noise of standard deviation ``noise`` (``A`` a fixed random n_latent x n_in
    matrix) and the label is drawn from the softmax of a fixed random
    ``n_latent-n_hidden-n_classes`` tanh network of z (the teacher). Returns (x, y) for
    training and for test (float32 inputs), and the teacher's own test loss and accuracy:
    the best that a model can expect.
    """
    rng = np.random.default_rng(seed + 1000)
    n = n_train + n_test
    z = rng.standard_normal((n, n_latent), dtype=np.float32)
    a = (rng.standard_normal((n_latent, n_in)) / np.sqrt(n_latent)).astype(np.float32)
    x = rng.standard_normal((n, n_in), dtype=np.float32)
    x *= noise
    x += z @ a
    w1 = (rng.standard_normal((n_latent, n_hidden)) / np.sqrt(n_latent)).astype(np.float32)
    w2 = (rng.standard_normal((n_hidden, n_classes)) * (8.0 / np.sqrt(n_hidden))).astype(
        np.float32
    )
    logits = np.tanh(z @ w1) @ w2
    y = (logits - np.log(-np.log(rng.random(logits.shape)))).argmax(1)  # Gumbel-max sampling
    test = slice(n_train, n)
    bayes_loss = float(demo.softmax_cross_entropy(logits[test], y[test])[0])
    bayes_accuracy = float((logits[test].argmax(1) == y[test]).mean())
    return (x[:n_train], y[:n_train]), (x[test], y[test]), bayes_loss, bayes_accuracy


# -- problems: everything a run needs, the same for every precision ------------------------
def epoch_batches(n, batch_size, epochs, seed):
    """Index arrays of shuffled mini-batches, epoch after epoch."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(epochs):
        order = rng.permutation(n)
        batches += [order[i : i + batch_size] for i in range(0, n, batch_size)]
    return batches


def digits_problem(epochs=30, batch_size=64, seed=0):
    """The bundled digits network (``fastopt.cli.demo``), curve: whole-training-set loss
    after each epoch.
    """
    (x_train, y_train), (x_test, y_test) = demo.split_digits(seed=seed)
    x_train, x_test = x_train.astype(np.float32), x_test.astype(np.float32)
    per_epoch = -(-len(y_train) // batch_size)

    def evaluate(fp, x, y):
        logits = demo.forward(fp.params, x)[1]
        return float(demo.softmax_cross_entropy(logits, y)[0]), float((logits.argmax(1) == y).mean())

    return {
        "name": "digits",
        "description": (
            f"digits MLP 64-64-10 (fastopt.cli.demo), {len(y_train)} train / {len(y_test)} "
            f"test images, {epochs} epochs of batches of {batch_size}"
        ),
        "optimizers": DIGITS_OPTIMIZERS,
        "init": lambda: demo.init_mlp(x_train.shape[1], 64, 10, np.float32, seed),
        "loss_and_grad": lambda fp, b: demo.loss_and_grad(fp, x_train[b], y_train[b]),
        "batches": lambda order_seed: epoch_batches(len(y_train), batch_size, epochs, order_seed),
        "eval_every": per_epoch,
        "curve": lambda fp: evaluate(fp, x_train, y_train)[0],
        "curve_label": "training-set loss (all 1,348 images), per epoch",
        "train": lambda fp: evaluate(fp, x_train, y_train),
        "test": lambda fp: evaluate(fp, x_test, y_test),
        "seed": seed,
        "info": {"epochs": epochs, "batch_size": batch_size, "n_train": len(y_train),
                 "n_test": len(y_test)},
    }  # fmt: skip


def teacher_problem(steps=2000, batch_size=128, n_train=100_000, n_test=10_000,
                    eval_every=100, curve_samples=10_000, sizes=(784, 1024, 256, 10),
                    seed=0):  # fmt: skip
    """The >= 1M-parameter MLP on the teacher-student task; curve: loss on the first
    ``curve_samples`` training samples every ``eval_every`` steps.
    """
    (x_train, y_train), (x_test, y_test), bayes_loss, bayes_acc = teacher_data(
        n_train, n_test, n_in=sizes[0], n_classes=sizes[-1], seed=seed
    )
    epochs = -(-steps * batch_size // n_train)
    parameters = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    x_curve, y_curve = x_train[:curve_samples], y_train[:curve_samples]
    return {
        "name": "teacher",
        "description": (
            f"MLP {'-'.join(map(str, sizes))} ({parameters:,} parameters), teacher-student "
            f"task, {n_train} train / {n_test} test samples, {steps} steps of batches of "
            f"{batch_size}"
        ),
        "optimizers": TEACHER_OPTIMIZERS,
        "init": lambda: init_mlp(sizes, np.float32, seed),
        "loss_and_grad": lambda fp, b: mlp_loss_and_grad(fp, x_train[b], y_train[b]),
        "batches": lambda order_seed: epoch_batches(n_train, batch_size, epochs, order_seed)[
            :steps
        ],
        "eval_every": eval_every,
        "curve": lambda fp: mlp_evaluate(fp, x_curve, y_curve)[0],
        "curve_label": f"loss on {len(y_curve):,} training samples, every {eval_every} steps",
        "train": lambda fp: mlp_evaluate(fp, x_train, y_train),
        "test": lambda fp: mlp_evaluate(fp, x_test, y_test),
        "seed": seed,
        "info": {"steps": steps, "batch_size": batch_size, "n_train": n_train,
                 "n_test": n_test, "sizes": list(sizes), "parameters": parameters,
                 "teacher_test_loss": bayes_loss, "teacher_test_accuracy": bayes_acc},
    }  # fmt: skip


# -- one run -----------------------------------------------------------------------------
def state_change(before, opt):
    """Per state buffer: fractions of elements that the last step left unchanged, and
    that it decreased (from the decoded values before and after it).
    """
    out = {}
    for name, old in before.items():
        new = opt.state.decoded(name)
        out[name] = {
            "unchanged": float(np.mean(new == old)),
            "decreased": float(np.mean(new < old)),
            "median": float(np.median(np.abs(new))),
        }
    return out


def train_run(problem, optimizer, precision, order_seed=None):
    """Train ``problem`` once; returns the curves and final figures as a dict."""
    cls, options = problem["optimizers"][optimizer]
    order_seed = problem["seed"] if order_seed is None else order_seed
    fp = problem["init"]()
    opt = cls(fp, param_groups=[{"params": "bias", "weight_decay": 0.0}],
              state_precision=precision, **options)  # fmt: skip
    batches = problem["batches"](order_seed)
    every, loss_and_grad = problem["eval_every"], problem["loss_and_grad"]
    start = time.perf_counter()
    curve_steps, curve, batch_loss = [0], [problem["curve"](fp)], []
    medians = {name: [0.0] for name in opt.state.buffers}
    before = None
    for step, batch in enumerate(batches, 1):
        batch_loss.append(loss_and_grad(fp, batch))
        if step == len(batches):
            before = {name: opt.state.decoded(name) for name in opt.state.buffers}
        opt.step()
        if step % every == 0 or step == len(batches):
            curve_steps.append(step)
            curve.append(problem["curve"](fp))
            for name in medians:
                medians[name].append(float(np.median(np.abs(opt.state.decoded(name)))))
    train_loss, train_acc = problem["train"](fp)
    test_loss, test_acc = problem["test"](fp)
    finite = bool(np.all(np.isfinite(fp.data)))
    return {
        "optimizer": optimizer,
        "options": {k: v for k, v in options.items()},
        "precision": precision,
        "order_seed": order_seed,
        "steps": len(batches),
        "curve_steps": curve_steps,
        "curve_loss": curve,
        "state_median_curve": medians,
        "batch_loss": batch_loss,
        "train_loss": train_loss,
        "train_accuracy": train_acc,
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "finite": finite,
        "state_last_step": state_change(before, opt) if before else {},
        "seconds": time.perf_counter() - start,
    }


def compare(run, reference):
    """The differences of ``run`` from ``reference`` and the verdict against the targets."""
    rel = (run["train_loss"] - reference["train_loss"]) / reference["train_loss"]
    points = 100.0 * (run["test_accuracy"] - reference["test_accuracy"])
    loss_ok = abs(rel) <= LOSS_TARGET
    acc_ok = abs(points) <= ACCURACY_TARGET
    return {
        "train_loss_rel_diff": rel,
        "test_loss_rel_diff": (run["test_loss"] - reference["test_loss"]) / reference["test_loss"],
        "test_accuracy_diff_points": points,
        "loss_within_target": bool(loss_ok),
        "accuracy_within_target": bool(acc_ok),
        "verdict": "PASS" if loss_ok and acc_ok else "MISS",
    }


def run_problem(problem, precisions, optimizers=None, order_runs=1, print_fn=print):
    """Every optimizer of ``problem`` at every precision ("full" first, as the reference),
    plus ``order_runs`` full-precision runs with other batch orders.
    """
    rows = []
    for optimizer in optimizers or list(problem["optimizers"]):
        reference = None
        for precision in precisions:
            run = train_run(problem, optimizer, precision)
            if precision == "full":
                reference = run
            run["comparison"] = compare(run, reference) if precision != "full" else None
            run["kind"] = "precision"
            rows.append(run)
            print_fn(_progress(problem["name"], run))
        for k in range(1, order_runs + 1):
            run = train_run(problem, optimizer, "full", order_seed=problem["seed"] + k)
            run["comparison"] = compare(run, reference)
            run["kind"] = "batch order"
            rows.append(run)
            print_fn(_progress(problem["name"], run))
    return rows


def _progress(model, run):
    label = run["precision"] + ("" if run["kind"] == "precision" else f" (order {run['order_seed']})")
    return (f"  {model:8s} {run['optimizer']:13s} {label:18s} train loss {run['train_loss']:.5f}  "
            f"test acc {100 * run['test_accuracy']:.2f}%  {run['seconds']:.1f} s")  # fmt: skip


# -- report ------------------------------------------------------------------------------
HEADER = ("model", "optimizer", "state", "train loss", "vs full", "test loss", "test acc",
          "vs full", "result")  # fmt: skip


def table_rows(models):
    out = []
    for model in models:
        for run in model["runs"]:
            c = run["comparison"]
            state = run["precision"] if run["kind"] == "precision" else "full, other order"
            out.append((
                model["name"], run["optimizer"], state, f"{run['train_loss']:.5f}",
                "" if c is None else f"{100 * c['train_loss_rel_diff']:+.2f}%",
                f"{run['test_loss']:.4f}", f"{100 * run['test_accuracy']:.2f}%",
                "" if c is None else f"{c['test_accuracy_diff_points']:+.2f} pt",
                "" if c is None else (c["verdict"] if run["kind"] == "precision"
                                      else f"({c['verdict'].lower()})"),
            ))  # fmt: skip
    return out


def format_table(models, markdown=False):
    rows = table_rows(models)
    if markdown:
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADER)]
    line = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(HEADER), line(["-" * w for w in widths])] + [line(r) for r in rows])


def misses(models):
    """Plain sentences, one per compact-precision run that misses a target."""
    out = []
    for model in models:
        for run in model["runs"]:
            c = run["comparison"]
            if run["kind"] != "precision" or c is None or c["verdict"] == "PASS":
                continue
            what = []
            if not c["loss_within_target"]:
                what.append(f"final training loss {100 * c['train_loss_rel_diff']:+.2f}% "
                            f"(target within {100 * LOSS_TARGET:.0f}%)")  # fmt: skip
            if not c["accuracy_within_target"]:
                what.append(f"test accuracy {c['test_accuracy_diff_points']:+.2f} points "
                            f"(target within {ACCURACY_TARGET} points)")  # fmt: skip
            out.append(f"MISS: {model['name']} {run['optimizer']} {run['precision']}: "
                       + "; ".join(what))  # fmt: skip
    return out


def plot(models, path):
    """Loss curves: per model, one column per optimizer; top row the curves (log y), bottom
    row each curve's relative difference from the full-precision one (%, the loss target
    shaded).
    """
    from fastopt._plotting import finish, pyplot, run_styles

    plt = pyplot(headless=True)
    columns = max(len({r["optimizer"] for r in m["runs"]}) for m in models)
    fig, axes = plt.subplots(2 * len(models), columns, figsize=(3.6 * columns, 5.6 * len(models)),
                             squeeze=False, gridspec_kw={"height_ratios": [3, 2] * len(models)})  # fmt: skip
    for m, model in enumerate(models):
        optimizers = list(dict.fromkeys(r["optimizer"] for r in model["runs"]))
        labels = list(dict.fromkeys(_curve_label(r) for r in model["runs"]))
        styles = dict(zip(labels, run_styles(len(labels))))
        for col in range(columns):
            top, bottom = axes[2 * m, col], axes[2 * m + 1, col]
            if col >= len(optimizers):
                top.axis("off"), bottom.axis("off")
                continue
            runs = [r for r in model["runs"] if r["optimizer"] == optimizers[col]]
            reference = next(r for r in runs if r["precision"] == "full" and r["kind"] == "precision")
            ref = np.asarray(reference["curve_loss"])
            for run in runs:
                label = _curve_label(run)
                style = dict(styles[label], markevery=None, marker=None)
                if run["kind"] != "precision":
                    style.update(linestyle=":", color="0.5")
                top.plot(run["curve_steps"], run["curve_loss"], label=label, **style)
                if run is not reference:
                    rel = 100.0 * (np.asarray(run["curve_loss"]) / ref - 1.0)
                    bottom.plot(run["curve_steps"], rel, label=label, **style)
            top.set_yscale("log")
            top.set_title(f"{model['name']}: {optimizers[col]}", fontsize=10)
            top.grid(True, which="both", alpha=0.3)
            bottom.axhspan(-100 * LOSS_TARGET, 100 * LOSS_TARGET, color="0.85", zorder=0)
            bottom.axhline(0, color="k", linewidth=0.6)
            bottom.grid(True, alpha=0.3)
            bottom.set_xlabel("step")
            if col == 0:
                top.set_ylabel("loss (log)")
                bottom.set_ylabel("vs full state (%)")
                top.legend(fontsize=8)
        axes[2 * m, 0].annotate(model["curve_label"], (0, 1.12), xycoords="axes fraction",
                                fontsize=9, ha="left")  # fmt: skip
    fig.suptitle("Loss curves by optimizer state precision (grey band: within 2% of full)",
                 fontsize=11)  # fmt: skip
    finish(axes[0, 0], path)
    plt.close(fig)


def _curve_label(run):
    return run["precision"] if run["kind"] == "precision" else f"full, batch order {run['order_seed']}"


# -- command line ------------------------------------------------------------------------
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test: few steps")
    parser.add_argument("--precisions", nargs="+", choices=list(PRECISIONS),
                        default=list(PRECISIONS),
                        help="state precisions (default: all there are; 'full' is always "
                             "run as the reference)")  # fmt: skip
    parser.add_argument("--models", nargs="+", choices=["digits", "teacher"],
                        default=["digits", "teacher"])  # fmt: skip
    parser.add_argument("--optimizers", nargs="+", default=None,
                        help="optimizers to run (default: each model's list)")  # fmt: skip
    parser.add_argument("--order-runs", type=int, default=1,
                        help="extra full-precision runs with other batch orders (default 1)")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of the optimizer step (default 1; see above)")
    parser.add_argument("--out", default="docs", help="folder for the JSON and the PNG")
    parser.add_argument("--no-plot", action="store_true")
    return parser.parse_args(argv)


def main(argv=None, print_fn=print):
    args = parse_args(argv)
    precisions = ["full"] + [p for p in dict.fromkeys(args.precisions) if p != "full"]
    sizes = QUICK if args.quick else FULL
    fastopt.set_num_threads(args.threads)
    start = time.perf_counter()
    print_fn(f"fastopt {fastopt.__version__}, numpy {np.__version__}, precisions "
             f"{precisions}, {os.cpu_count()} CPUs, {args.threads} optimizer thread(s)"
             f"{' (quick)' if args.quick else ''}")  # fmt: skip
    models = []
    for name in args.models:
        problem = (digits_problem(**sizes["digits"]) if name == "digits"
                   else teacher_problem(**sizes["teacher"]))  # fmt: skip
        default = QUICK_OPTIMIZERS.get(name) if args.quick else None
        optimizers = [o for o in (args.optimizers or default or problem["optimizers"])
                      if o in problem["optimizers"]]  # fmt: skip
        print_fn(problem["description"])
        t0 = time.perf_counter()
        runs = run_problem(problem, precisions, optimizers, args.order_runs, print_fn)
        models.append({"name": name, "description": problem["description"],
                       "curve_label": problem["curve_label"], "info": problem["info"],
                       "runs": runs, "seconds": time.perf_counter() - t0})  # fmt: skip
    total = time.perf_counter() - start
    print_fn("")
    print_fn(format_table(models))
    print_fn("")
    found = misses(models)
    for line in found:
        print_fn(line)
    if not found:
        print_fn("every compact-precision run is within the targets")
    result = {
        "command": "python bench/low_precision_accuracy.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": args.quick,
        "precisions": precisions,
        "targets": {"train_loss_rel_diff": LOSS_TARGET, "test_accuracy_points": ACCURACY_TARGET},
        "versions": {"fastopt": fastopt.__version__, "numpy": np.__version__},
        "cpus": os.cpu_count(),
        "optimizer_threads": args.threads,
        "seconds": total,
        "models": models,
        "misses": found,
    }
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, "low-precision-accuracy.json")
    with open(json_path, "w") as f:
        json.dump(result, f, indent=1)
    print_fn(f"wrote {json_path}")
    if not args.no_plot:
        png = os.path.join(args.out, "low-precision.png")
        plot(models, png)
        print_fn(f"wrote {png}")
    print_fn(f"total {total:.1f} s")
    return result


if __name__ == "__main__":
    main()
