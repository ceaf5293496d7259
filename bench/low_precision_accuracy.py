"""Accuracy of compact optimizer state: the same training run with every ``state_precision``.

Usage: python bench/low_precision_accuracy.py [--quick] [--precisions full bfloat16 ...]
       [--models digits teacher] [--optimizers adam ...] [--orders N] [--out docs/]

Two models, trained in float32 with mini-batches, once per optimizer, state precision and
batch order, from one initialisation; every precision sees the same batch orders:

* ``digits``: the bundled digits network of ``fastopt.cli.demo`` (MLP 64-64-10, 4,810
  parameters, 1,348 training / 449 test images), with each optimizer at the demo's
  settings, for 30 epochs of batches of 64 (660 steps), on 5 batch orders.
* ``teacher``: an MLP 784-1024-256-10 (1,068,810 parameters) trained on a synthetic
  teacher-student task (:func:`teacher_data`: inputs near a random 32-dimensional
  subspace of R^784, labels drawn from the softmax of a fixed random tanh network of the
  latent vector, so that even the teacher is right on only about 77% of the test set),
  100,000 training / 10,000 test samples, 2,000 steps of batches of 128 (about 2.6
  epochs), with Adam, AdamW and SGD with momentum, on 2 batch orders.

For each run: the loss curve, the final loss on the whole training set (not the last
mini-batch), the test loss and the test accuracy. A compact precision is compared with
full state run on the same batch order, and the mean of these paired differences over
the orders is judged against the targets (final training loss within 2% relative, test
accuracy within 0.5 points). For scale, the table gives the spread of full state across
batch orders: how far apart two runs are that differ only in noise.
Also recorded, for each state buffer, the median of its absolute values at each point of
the curve, and the fractions of its elements that the last step left unchanged and whose
magnitude it decreased (with bfloat16 state and beta2 = 0.999, Adam's second moment
cannot decrease: a 0.1% decrease is below half a bfloat16 ulp).

Writes ``low-precision-accuracy.json`` (every figure and curve) and ``low-precision.png``
(the curves) into ``--out`` and prints the table. ``--quick``: 3 epochs of digits, and
100 steps of Adam only on a small teacher data set, 2 batch orders each, for smoke tests
(the targets mean nothing there). The functions take sizes as arguments, so a test can
run them on tiny problems (``main(["--quick", "--out", tmp])``, or ``run_problem`` on
``digits_problem(epochs=1)``).

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
import tempfile
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
    "digits": {"epochs": 30, "batch_size": 64, "orders": 5},
    "teacher": {"steps": 2000, "batch_size": 128, "n_train": 100_000, "n_test": 10_000,
                "eval_every": 100, "curve_samples": 10_000, "orders": 2},
}  # fmt: skip
QUICK = {
    "digits": {"epochs": 3, "batch_size": 64, "orders": 2},
    "teacher": {"steps": 100, "batch_size": 128, "n_train": 4_000, "n_test": 1_000,
                "eval_every": 25, "curve_samples": 1_000, "orders": 2},
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
    w2 = (rng.standard_normal((n_hidden, n_classes)) * (8.0 / np.sqrt(n_hidden))).astype(np.float32)
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
        loss = demo.softmax_cross_entropy(logits, y)[0]
        return float(loss), float((logits.argmax(1) == y).mean())

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
        "smooth_every": per_epoch,
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
        "smooth_every": 20,
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
def state_names(opt):
    """The optimizer's state buffers (torch's names: without the 8-bit block scales)."""
    names = getattr(opt.state, "names", None)
    if names is not None:
        return list(names())
    return [k for k in opt.state.buffers if not k.endswith("_absmax")]


def smoothed(values, window):
    """Means of ``values`` over consecutive windows of ``window`` (the last may be
    shorter): the mini-batch losses, per epoch or per ``window`` steps.
    """
    return [float(np.mean(values[i : i + window])) for i in range(0, len(values), window)]


def state_change(before, opt):
    """Per state buffer: the fractions of elements that the last step left unchanged and
    whose magnitude it decreased, and the median magnitude after it (decoded values).
    """
    out = {}
    for name, old in before.items():
        new = opt.state.decoded(name)
        out[name] = {
            "unchanged": float(np.mean(new == old)),
            "decreased": float(np.mean(np.abs(new) < np.abs(old))),
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
    medians = {name: [0.0] for name in state_names(opt)}
    before = None
    for step, batch in enumerate(batches, 1):
        batch_loss.append(loss_and_grad(fp, batch))
        if step == len(batches):
            before = {name: opt.state.decoded(name) for name in state_names(opt)}
        opt.step()
        if step % every == 0 or step == len(batches):
            curve_steps.append(step)
            curve.append(problem["curve"](fp))
            for name in medians:
                medians[name].append(float(np.median(np.abs(opt.state.decoded(name)))))
    train_loss, train_acc = problem["train"](fp)
    test_loss, test_acc = problem["test"](fp)
    return {
        "optimizer": optimizer,
        "options": dict(options),
        "precision": precision,
        "order_seed": order_seed,
        "steps": len(batches),
        "curve_steps": curve_steps,
        "curve_loss": curve,
        "state_median_curve": medians,
        "batch_loss_every": problem["smooth_every"],
        "batch_loss_mean": smoothed(batch_loss, problem["smooth_every"]),
        "train_loss": train_loss,
        "train_accuracy": train_acc,
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "finite": bool(np.all(np.isfinite(fp.data))),
        "state_last_step": state_change(before, opt) if before else {},
        "seconds": time.perf_counter() - start,
    }


def run_problem(problem, precisions, optimizers=None, orders=1, print_fn=print):
    """Every optimizer of ``problem`` at every precision, each on ``orders`` batch orders
    (seeds ``seed``, ``seed + 1``, ...; the initialisation is the same for all).
    """
    runs = []
    for optimizer in optimizers or list(problem["optimizers"]):
        for k in range(orders):
            for precision in precisions:
                run = train_run(problem, optimizer, precision, order_seed=problem["seed"] + k)
                runs.append(run)
                print_fn(f"  {problem['name']:8s} {optimizer:13s} {precision:9s} order {k}  "
                         f"train loss {run['train_loss']:.5f}  test acc "
                         f"{100 * run['test_accuracy']:.2f}%  {run['seconds']:.1f} s")  # fmt: skip
    return runs


# -- comparison --------------------------------------------------------------------------
def _sd(values):
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def summarize(runs):
    """One row per (optimizer, precision): the means over batch orders, and for a compact
    precision the paired differences from full state on the same batch order (their
    mean is judged against the targets). A full row has the spread that batch order
    alone gives: the standard deviation over orders of the final training loss (% of its
    mean) and of the test accuracy (points).
    """
    rows = []
    for optimizer in dict.fromkeys(r["optimizer"] for r in runs):
        mine = [r for r in runs if r["optimizer"] == optimizer]
        orders = sorted({r["order_seed"] for r in mine})
        by = {(r["precision"], r["order_seed"]): r for r in mine}
        full = [by["full", k] for k in orders]
        for precision in dict.fromkeys(r["precision"] for r in mine):
            these = [by[precision, k] for k in orders]
            loss = [r["train_loss"] for r in these]
            acc = [100.0 * r["test_accuracy"] for r in these]
            row = {
                "optimizer": optimizer,
                "precision": precision,
                "orders": len(orders),
                "train_loss": float(np.mean(loss)),
                "test_loss": float(np.mean([r["test_loss"] for r in these])),
                "test_accuracy": float(np.mean(acc)) / 100.0,
                "train_loss_per_order": loss,
                "test_accuracy_per_order": [a / 100.0 for a in acc],
                "finite": all(r["finite"] for r in these),
            }
            if precision == "full":
                sd = _sd(loss)
                row["order_sd_train_loss_rel"] = None if sd is None else sd / float(np.mean(loss))
                row["order_sd_test_accuracy_points"] = _sd(acc)
            else:
                rel = [(r["train_loss"] - f["train_loss"]) / f["train_loss"]
                       for r, f in zip(these, full)]  # fmt: skip
                points = [100.0 * (r["test_accuracy"] - f["test_accuracy"])
                          for r, f in zip(these, full)]  # fmt: skip
                test_rel = [(r["test_loss"] - f["test_loss"]) / f["test_loss"]
                            for r, f in zip(these, full)]  # fmt: skip
                mean_rel, mean_points = float(np.mean(rel)), float(np.mean(points))
                loss_ok = abs(mean_rel) <= LOSS_TARGET and row["finite"]
                acc_ok = abs(mean_points) <= ACCURACY_TARGET and row["finite"]
                row.update({
                    "train_loss_rel_diff": mean_rel,
                    "train_loss_rel_diff_per_order": rel,
                    "train_loss_higher_in": int(sum(v > 0 for v in rel)),
                    "test_loss_rel_diff": float(np.mean(test_rel)),
                    "test_accuracy_diff_points": mean_points,
                    "test_accuracy_diff_points_per_order": points,
                    "loss_within_target": bool(loss_ok),
                    "accuracy_within_target": bool(acc_ok),
                    "verdict": "PASS" if loss_ok and acc_ok else "MISS",
                })  # fmt: skip
            rows.append(row)
    return rows


# -- report ------------------------------------------------------------------------------
HEADER = ("model", "optimizer", "state", "runs", "train loss", "vs full", "higher",
          "test loss", "test acc", "vs full", "result")  # fmt: skip


def table_rows(models):
    out = []
    for model in models:
        for row in model["summary"]:
            if row["precision"] == "full":
                sd_loss = row["order_sd_train_loss_rel"]
                sd_acc = row["order_sd_test_accuracy_points"]
                loss_cmp = "" if sd_loss is None else f"sd {100 * sd_loss:.2f}%"
                acc_cmp = "" if sd_acc is None else f"sd {sd_acc:.2f} pt"
                higher, verdict = "", ""
            else:
                loss_cmp = f"{100 * row['train_loss_rel_diff']:+.2f}%"
                acc_cmp = f"{row['test_accuracy_diff_points']:+.2f} pt"
                higher = f"{row['train_loss_higher_in']}/{row['orders']}"
                verdict = row["verdict"]
            out.append((
                model["name"], row["optimizer"], row["precision"], str(row["orders"]),
                f"{row['train_loss']:.5f}", loss_cmp, higher, f"{row['test_loss']:.4f}",
                f"{100 * row['test_accuracy']:.2f}%", acc_cmp, verdict,
            ))  # fmt: skip
    return out


def format_table(models, markdown=False):
    """The results table: means over the batch orders ("runs"); "vs full": the mean
    paired difference from full state (on full rows: the batch-order standard
    deviation); "higher": in how many orders the final training loss was above full's.
    """
    rows = table_rows(models)
    if markdown:
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADER)]
    line = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(HEADER), line(["-" * w for w in widths])] + [line(r) for r in rows])


def misses(models):
    """Plain sentences, one per compact-precision row that misses a target."""
    out = []
    for model in models:
        for row in model["summary"]:
            if row["precision"] == "full" or row["verdict"] == "PASS":
                continue
            what = []
            if not row["finite"]:
                what.append("non-finite parameters")
            if not row["loss_within_target"]:
                what.append(f"final training loss {100 * row['train_loss_rel_diff']:+.2f}% "
                            f"(target within {100 * LOSS_TARGET:.0f}%)")  # fmt: skip
            if not row["accuracy_within_target"]:
                what.append(f"test accuracy {row['test_accuracy_diff_points']:+.2f} points "
                            f"(target within {ACCURACY_TARGET} points)")  # fmt: skip
            out.append(f"MISS: {model['name']} {row['optimizer']} {row['precision']} "
                       f"(mean of {row['orders']} batch orders): " + "; ".join(what))  # fmt: skip
    return out


def plot(models, path):
    """Per model, one column per optimizer: on top the loss curves of the first batch
    order (log y), below each run's relative difference from the full-state run on the
    same batch order (%; thin lines: the other orders; grey dotted: full state on another
    order against the first, the noise of batch order; shaded: the 2% target).
    """
    from fastopt._plotting import pyplot, run_styles

    plt = pyplot(headless=True)
    columns = max(len({r["optimizer"] for r in m["runs"]}) for m in models)
    fig = plt.figure(figsize=(3.6 * columns, 5.2 * len(models)), layout="constrained")
    subfigs = np.atleast_1d(fig.subfigures(len(models), 1, hspace=0.04))
    for subfig, model in zip(subfigs, models):
        axes = subfig.subplots(2, columns, squeeze=False, gridspec_kw={"height_ratios": [3, 2]})
        subfig.suptitle(f"{model['description']}\ncurve: {model['curve_label']}", fontsize=10)
        runs = model["runs"]
        optimizers = list(dict.fromkeys(r["optimizer"] for r in runs))
        precisions = list(dict.fromkeys(r["precision"] for r in runs))
        styles = dict(zip(precisions, run_styles(len(precisions))))
        first = min(r["order_seed"] for r in runs)
        for col in range(columns):
            top, bottom = axes[0, col], axes[1, col]
            if col >= len(optimizers):
                top.axis("off"), bottom.axis("off")
                continue
            mine = [r for r in runs if r["optimizer"] == optimizers[col]]
            by = {(r["precision"], r["order_seed"]): r for r in mine}
            full_first = np.asarray(by["full", first]["curve_loss"])
            shown, spread = [], [100 * LOSS_TARGET]
            for run in mine:
                style = dict(styles[run["precision"]], marker=None)
                style.pop("markevery", None)
                full = np.asarray(by["full", run["order_seed"]]["curve_loss"])
                rel = 100.0 * (np.asarray(run["curve_loss"]) / full - 1.0)
                if run["order_seed"] == first:
                    width = 2.6 if run["precision"] == "full" else 1.3  # full shows beneath
                    top.plot(run["curve_steps"], run["curve_loss"], label=run["precision"],
                             linewidth=width, **style)  # fmt: skip
                    shown.append(run["curve_loss"])
                    if run["precision"] != "full":
                        bottom.plot(run["curve_steps"], rel, linewidth=1.4, **style)
                elif run["precision"] == "full":
                    other = 100.0 * (np.asarray(run["curve_loss"]) / full_first - 1.0)
                    bottom.plot(run["curve_steps"], other, color="0.45", linestyle=":",
                                linewidth=1.2, label="full, other order")  # fmt: skip
                else:
                    bottom.plot(run["curve_steps"], rel, linewidth=0.7, alpha=0.6, **style)
                if run["precision"] != "full":
                    spread.append(float(np.max(np.abs(rel))))
            top.set_yscale("log")
            top.set_ylim(*_loss_ylim(shown))
            limit = 1.15 * max(spread)  # the noise curves (grey) may run off this scale
            bottom.set_ylim(-limit, limit)
            top.set_title(optimizers[col], fontsize=10)
            top.grid(True, which="both", alpha=0.3)
            bottom.axhspan(-100 * LOSS_TARGET, 100 * LOSS_TARGET, color="0.88", zorder=0)
            bottom.axhline(0, color="k", linewidth=0.6)
            bottom.grid(True, alpha=0.3)
            bottom.set_xlabel("step")
            if col == 0:
                top.set_ylabel("loss (log)")
                bottom.set_ylabel("vs full state (%)")
                top.legend(fontsize=8)
                handles, labels = bottom.get_legend_handles_labels()
                if handles:
                    bottom.legend(handles[:1], labels[:1], fontsize=7)
    fig.suptitle("Loss by optimizer state precision; lower panels: relative difference from "
                 "full state on the same batch order (thin: other orders; grey band: 2%)",
                 fontsize=11)  # fmt: skip
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _loss_ylim(curves):
    """Log-axis limits for loss curves: all of them, unless after the first tenth of the
    steps they span less than a factor of 3; then that later part (the first fall runs
    off the top).
    """
    values = np.asarray(curves, dtype=float)
    later = values[:, max(1, values.shape[1] // 10) :]
    low, high = float(values.min()), float(values.max())
    if later.size and later.max() < 3 * later.min():
        high = float(later.max())
    return low / 1.04, high * 1.04


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
    parser.add_argument(
        "--orders",
        type=int,
        default=None,
        help="batch orders per configuration (default: digits 5, teacher 2)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads of the optimizer step (default 1; see above)",
    )
    parser.add_argument("--out", default=None,
                        help="folder for the JSON and the PNG (default: docs; with --quick, "
                             "a new temporary folder, so as not to replace the results "
                             "in docs)")  # fmt: skip
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
        options = dict(sizes[name])
        orders = options.pop("orders") if args.orders is None else args.orders
        options.pop("orders", None)
        problem = digits_problem(**options) if name == "digits" else teacher_problem(**options)
        default = QUICK_OPTIMIZERS.get(name) if args.quick else None
        optimizers = [o for o in (args.optimizers or default or problem["optimizers"])
                      if o in problem["optimizers"]]  # fmt: skip
        print_fn(problem["description"] + f", {orders} batch order(s)")
        t0 = time.perf_counter()
        runs = run_problem(problem, precisions, optimizers, orders, print_fn)
        models.append({"name": name, "description": problem["description"],
                       "curve_label": problem["curve_label"], "info": problem["info"],
                       "orders": orders, "summary": summarize(runs), "runs": runs,
                       "seconds": time.perf_counter() - t0})  # fmt: skip
    total = time.perf_counter() - start
    print_fn("")
    print_fn(format_table(models))
    print_fn("")
    found = misses(models)
    for line in found:
        print_fn(line)
    if not found:
        print_fn("every compact-precision configuration is within the targets")
    shown = " ".join(argv if argv is not None else sys.argv[1:])
    result = {
        "command": ("python bench/low_precision_accuracy.py " + shown).strip(),
        "quick": args.quick,
        "precisions": precisions,
        "targets": {"train_loss_rel_diff": LOSS_TARGET, "test_accuracy_points": ACCURACY_TARGET},
        "versions": {"fastopt": fastopt.__version__, "numpy": np.__version__},
        "cpus": os.cpu_count(),
        "optimizer_threads": args.threads,
        "seconds": total,
        "table_markdown": format_table(models, markdown=True),
        "misses": found,
        "models": models,
    }
    docs = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "docs")
    out = args.out or (tempfile.mkdtemp(prefix="low-precision-") if args.quick else docs)
    os.makedirs(out, exist_ok=True)
    json_path = os.path.join(out, "low-precision-accuracy.json")
    with open(json_path, "w") as f:
        json.dump(result, f, indent=1)
    print_fn(f"wrote {json_path}")
    if not args.no_plot:
        png = os.path.join(out, "low-precision.png")
        plot(models, png)
        print_fn(f"wrote {png}")
    print_fn(f"total {total:.1f} s")
    return result


if __name__ == "__main__":
    main()
