"""The learning-rate tools on the command line: sweep, range test and gradient check, on the
user's PROBLEM (see :mod:`fastopt.cli.problem_spec`) or, for the sweep, the bundled demo.
"""

import inspect
import json

from .. import optim
from .arguments import CommandError, UserCodeFailed, require_plotting
from .problem_spec import load_problem

OPTIMIZERS = {
    "sgd": optim.SGD,
    "adagrad": optim.Adagrad,
    "rmsprop": optim.RMSprop,
    "adam": optim.Adam,
    "adamw": optim.AdamW,
}
NOT_OPTIONS = {"self", "params", "lr", "param_groups", "device"}


def optimizer_options(name, pairs):
    """``(optimizer class, options)`` for ``--optimizer name --option KEY=VALUE ...``."""
    cls = OPTIMIZERS[name]
    known = [k for k in inspect.signature(cls.__init__).parameters if k not in NOT_OPTIONS]
    options = {}
    for key, value in pairs:
        if key not in known:
            raise CommandError(
                f"--option {key}: {cls.__name__} has no option {key!r} (it has: {', '.join(known)})"
            )
        options[key] = value
    return cls, options


def check_problem(problem):
    """The checks the tools make of ``(loss_grad, params, batches)``, made now."""
    from ..lr.problem import Problem

    try:
        Problem(problem.loss_grad, problem.params, problem.batches)
    except (TypeError, ValueError) as error:
        raise CommandError(f"PROBLEM {problem.name}: {error}") from None


def check_optimizer(cls, params, options):
    """Build the optimizer once, so that a rejected option ends the command before any work."""
    try:
        cls(params, lr=1e-3, **options)
    except (TypeError, ValueError) as error:
        shown = ", ".join(f"{k}={v!r}" for k, v in options.items())
        raise CommandError(f"{cls.__name__}({shown}): {error}") from None


def start(args):
    """Load the PROBLEM and check everything that can be checked before the work."""
    if args.plot:
        require_plotting()
    cls, options = optimizer_options(args.optimizer, args.option)
    problem = load_problem(args.problem)
    check_problem(problem)
    check_optimizer(cls, problem.params, options)
    return problem, cls, options


def finish(args, result, what):
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result.to_dict(), f, indent=1, allow_nan=False)
        print(f"{what} written to {args.json}")
    if getattr(args, "plot", None):
        result.plot(args.plot)
        print(f"plot written to {args.plot}")


def run_sweep(args):
    from ..lr.sweep import sweep

    problem, cls, options = start(args)
    result = sweep(
        problem.loss_grad,
        problem.params,
        optimizer=cls,
        lrs=args.lrs,
        iterations=args.iterations,
        batches=problem.batches,
        **options,
    )
    print(result.table())
    finish(args, result, "results")
    return 0 if result.best_lr is not None else 1


def run_range_test(args):
    from ..lr.range_test import lr_range_test

    problem, cls, options = start(args)
    result = lr_range_test(
        problem.loss_grad,
        problem.params,
        optimizer=cls,
        min_lr=args.min_lr,
        max_lr=args.max_lr,
        iterations=args.iterations,
        repeats=args.repeats,
        batches=problem.batches,
        **options,
    )
    print(result.table())
    finish(args, result, "results")
    return 0


def first_batch(problem):
    """The batch the gradient is checked on: the first of the PROBLEM's batches (None for
    a full-batch problem). No batch is a bad argument; an error from the user's batches
    is the user's code failing.
    """
    if problem.batches is None:
        return None
    what = "batches()" if callable(problem.batches) else "iterating over batches"
    try:
        source = problem.batches() if callable(problem.batches) else problem.batches
        for batch in source:
            return batch
    except Exception as error:
        raise UserCodeFailed(f"{what} raised {type(error).__name__}") from error
    raise CommandError(
        f"PROBLEM {problem.name}: Invalid batches: 0 batches (expected at least 1: the "
        "gradient is checked on the first)"
    )


def run_check_grad(args):
    from ..lr.gradcheck import GradCheckError, check_grad

    problem = load_problem(args.problem)
    check_problem(problem)
    batch = first_batch(problem)
    try:
        result = check_grad(
            problem.loss_grad,
            problem.params,
            eps=args.eps,
            tolerance=args.tolerance,
            batch=batch,
            seed=args.seed,
        )
    except GradCheckError as error:
        where = f"--eps {args.eps:g}" if error.argument == "eps" and args.eps else None
        raise CommandError(f"{where or f'PROBLEM {problem.name}'}: {error}") from None
    except Exception as error:  # the problem's form was checked: this is loss_grad's
        raise UserCodeFailed(f"loss_grad raised {type(error).__name__}") from error
    print(result.message)
    finish(args, result, "results")
    return 0 if result.ok else 1


def run_sweep_demo(args):
    from ..lr.sweep import sweep
    from . import demo

    if args.plot is None:
        try:
            require_plotting()
            args.plot = "sweep.png"
        except CommandError as error:
            print(f"no plot: {error}")
    elif args.plot:
        require_plotting()
    cls, options = demo.OPTIMIZERS[args.optimizer]
    options = {k: v for k, v in options.items() if k != "lr"}
    fp, loss_grad, batches = demo.digits_problem(args.iterations, args.batch_size)
    shown = ", ".join(f"{k}={v!r}" for k, v in options.items())
    print(
        f"choosing the learning rate of {cls.__name__}({shown}) for the digits network "
        f"({fp.size} parameters): {args.iterations} updates on mini-batches of "
        f"{args.batch_size} per rate, training-set cost after each"
    )
    result = sweep(
        loss_grad,
        fp,
        optimizer=cls,
        lrs=args.lrs,
        iterations=args.iterations,
        batches=batches,
        **options,
    )
    print(result.table())
    finish(args, result, "results")
    if result.best_lr is None:
        return 1
    if args.train_epochs > 0:
        print(f"\ntraining with the chosen lr={result.best_lr:g}:")
        outcome = demo.train(
            args.optimizer, lr=result.best_lr, epochs=args.train_epochs, batch_size=args.batch_size
        )
        return 0 if outcome["test_accuracy"] > 0.5 else 1
    return 0
