"""A plain-NumPy training loop: a one-hidden-layer network on the UCI digits.

The model's arrays live in a FlatParams; the loss function writes gradients into its
per-layer gradient views, and one optimizer step updates the whole flat buffer.
"""

import time

import numpy as np

from .. import optim
from ..buffers import FlatParams
from .datasets import load_digits

OPTIMIZERS = {
    "sgd": (optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    "adagrad": (optim.Adagrad, {"lr": 0.05}),
    "rmsprop": (optim.RMSprop, {"lr": 1e-3}),
    "adam": (optim.Adam, {"lr": 3e-3}),
    "adamw": (optim.AdamW, {"lr": 3e-3, "weight_decay": 1e-2}),
}


def split_digits(test_fraction=0.25, seed=0):
    """Standardised train/test split of the digits (statistics from the training part)."""
    images, labels = load_digits()
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = int(len(labels) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    mean, std = images[train].mean(0), images[train].std(0) + 1.0
    x = (images - mean) / std
    return (x[train], labels[train]), (x[test], labels[test])


def init_mlp(n_in, n_hidden, n_out, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return FlatParams(
        {
            "W1": rng.standard_normal((n_in, n_hidden)) * np.sqrt(2.0 / n_in),
            "b1": np.zeros(n_hidden),
            "W2": rng.standard_normal((n_hidden, n_out)) * np.sqrt(1.0 / n_hidden),
            "b2": np.zeros(n_out),
        },
        dtype=dtype,
        groups={"bias": ["b1", "b2"]},
    )


def forward(params, x):
    hidden = np.maximum(x @ params["W1"] + params["b1"], 0)
    logits = hidden @ params["W2"] + params["b2"]
    return hidden, logits


def softmax_cross_entropy(logits, y):
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(y)), y].mean(), np.exp(log_probs)


def loss_and_grad(fp, x, y):
    """Mean cross-entropy on (x, y); writes its gradient into ``fp.grads``."""
    p, g = fp.params, fp.grads
    hidden, logits = forward(p, x)
    loss, probs = softmax_cross_entropy(logits, y)
    d_logits = probs
    d_logits[np.arange(len(y)), y] -= 1
    d_logits /= len(y)
    g["W2"][:] = hidden.T @ d_logits
    g["b2"][:] = d_logits.sum(0)
    d_hidden = (d_logits @ p["W2"].T) * (hidden > 0)
    g["W1"][:] = x.T @ d_hidden
    g["b1"][:] = d_hidden.sum(0)
    return float(loss)


def accuracy(fp, x, y):
    return float((forward(fp.params, x)[1].argmax(1) == y).mean())


def digits_problem(iterations, batch_size=64, dtype=np.float32, hidden=64, seed=0):
    """The network, ``loss_grad(params, grad, batch)`` and the batches for
    :func:`fastopt.sweep`, set up like :func:`train`: the gradient comes from a mini-batch
    of ``batch_size`` images and the returned cost is the whole training set's, so the
    sweep judges the same noisy updates that training makes on a cost curve without
    mini-batch noise.
    """
    (x_train, y_train), _ = split_digits(seed=seed)
    x_train = x_train.astype(dtype)
    fp = init_mlp(x_train.shape[1], hidden, 10, dtype, seed)
    rng = np.random.default_rng(seed)
    batches = []
    while len(batches) < iterations + 1:
        order = rng.permutation(len(y_train))
        batches += [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    def loss_grad(params, grad, batch):
        loss_and_grad(params, x_train[batch], y_train[batch])
        return softmax_cross_entropy(forward(params.params, x_train)[1], y_train)[0]

    return fp, loss_grad, batches[: iterations + 1]


def problem():
    """The digits network as a command-line PROBLEM, in float64 on the whole training set
    (``fastopt check-grad fastopt.cli.demo:problem``, ``fastopt sweep ...``): the cost
    and its exact gradient, so the gradient check applies.
    """
    (x_train, y_train), _ = split_digits()
    fp = init_mlp(x_train.shape[1], 64, 10, np.float64)
    return {"loss_grad": lambda params, grad: loss_and_grad(params, x_train, y_train), "params": fp}


def train(
    optimizer="adam",
    *,
    lr=None,
    epochs=30,
    batch_size=64,
    hidden=64,
    dtype=np.float32,
    seed=0,
    verbose=True,
    print_fn=print,
):
    """Train the network and return a summary dict (costs per epoch, accuracies)."""
    cls, options = OPTIMIZERS[optimizer]
    options = dict(options, **({} if lr is None else {"lr": lr}))
    (x_train, y_train), (x_test, y_test) = split_digits(seed=seed)
    x_train, x_test = x_train.astype(dtype), x_test.astype(dtype)
    fp = init_mlp(x_train.shape[1], hidden, 10, dtype, seed)
    opt = cls(fp, param_groups=[{"params": "bias", "weight_decay": 0.0}], **options)
    rng = np.random.default_rng(seed)
    costs, start = [], time.perf_counter()
    if verbose:
        print_fn(
            f"digits: {len(y_train)} train / {len(y_test)} test images, MLP 64-{hidden}-10, "
            f"{fp.size} parameters ({np.dtype(dtype).name}), {opt!r}"
        )
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(y_train))
        total = 0.0
        for begin in range(0, len(order), batch_size):
            batch = order[begin : begin + batch_size]
            total += loss_and_grad(fp, x_train[batch], y_train[batch]) * len(batch)
            opt.step()
        costs.append(total / len(order))
        if verbose:
            print_fn(
                f"epoch {epoch:3d}  cost {costs[-1]:.4f}  "
                f"test accuracy {accuracy(fp, x_test, y_test):.3f}"
            )
    result = {
        "optimizer": optimizer,
        "options": options,
        "costs": costs,
        "train_accuracy": accuracy(fp, x_train, y_train),
        "test_accuracy": accuracy(fp, x_test, y_test),
        "steps": opt.step_count,
        "seconds": time.perf_counter() - start,
    }
    if verbose:
        print_fn(
            f"final: train accuracy {result['train_accuracy']:.3f}, test accuracy "
            f"{result['test_accuracy']:.3f}, {result['steps']} steps in "
            f"{result['seconds']:.2f} s"
        )
    return result
