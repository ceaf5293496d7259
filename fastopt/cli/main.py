"""Command line.

``python -m fastopt sweep --demo``: choose a learning rate for the bundled digits network
with the grid sweep, write the cost curves to a PNG, then train with the chosen rate.
``python -m fastopt demo``: train the digits network with a given optimizer and rate.
``python -m fastopt bench``: step times against a bandwidth ceiling, NumPy and torch.
"""

import argparse


def main(argv=None):
    from . import demo

    parser = argparse.ArgumentParser(prog="python -m fastopt", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("demo", help="train a small network on the bundled UCI digits")
    run.add_argument("--optimizer", choices=sorted(demo.OPTIMIZERS), default="adam")
    run.add_argument(
        "--lr", type=float, default=None, help="learning rate (default: per optimizer)"
    )
    run.add_argument("--epochs", type=int, default=30)
    run.add_argument("--batch-size", type=int, default=64)
    run.add_argument("--float64", action="store_true", help="use float64 buffers")
    choose = commands.add_parser("sweep", help="choose a learning rate with the grid sweep")
    choose.add_argument(
        "--demo",
        action="store_true",
        required=True,
        help="sweep on the bundled digits network (the only problem the "
        "command line knows; call fastopt.sweep for your own)",
    )
    choose.add_argument("--optimizer", choices=sorted(demo.OPTIMIZERS), default="sgd")
    choose.add_argument("--iterations", type=int, default=60)
    choose.add_argument("--batch-size", type=int, default=64)
    choose.add_argument(
        "--plot", default="sweep.png", help="PNG path for the cost curves ('' for none)"
    )
    choose.add_argument(
        "--train-epochs",
        type=int,
        default=20,
        help="then train this many epochs with the pick (0: skip)",
    )
    bench = commands.add_parser("bench", help="step time vs bandwidth ceiling, NumPy and torch")
    bench.add_argument("--sizes", nargs="+", type=float, default=[1e3, 1e5, 1e7])
    bench.add_argument(
        "--optimizers",
        nargs="+",
        default=None,
        help="from: sgd sgd_momentum sgd_nesterov adagrad rmsprop "
        "rmsprop_centered adam adamw amsgrad (default: all)",
    )
    bench.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    bench.add_argument("--rounds", type=int, default=15)
    bench.add_argument("--threads", type=int, default=None)
    bench.add_argument("--no-numpy", action="store_true", help="skip the (slow) NumPy baseline")
    bench.add_argument("--no-torch", action="store_true")
    bench.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.command == "bench":
        from . import bench as benchmark

        unknown = set(args.optimizers or ()) - set(benchmark.CONFIGS)
        if unknown:
            parser.error(f"unknown optimizers {sorted(unknown)}")
        benchmark.run(
            args.sizes,
            args.optimizers or tuple(benchmark.CONFIGS),
            args.dtype,
            args.rounds,
            args.threads,
            not args.no_numpy,
            not args.no_torch,
            args.json,
        )
        return 0
    if args.command == "sweep":
        return _sweep_demo(args)
    if args.command == "demo":
        import numpy as np

        result = demo.train(
            args.optimizer,
            lr=args.lr,
            epochs=args.epochs,
            batch_size=args.batch_size,
            dtype=np.float64 if args.float64 else np.float32,
        )
        return 0 if result["test_accuracy"] > 0.5 else 1
    return 2


def _sweep_demo(args):
    from ..lr.sweep import sweep
    from . import demo

    cls, options = demo.OPTIMIZERS[args.optimizer]
    options = {k: v for k, v in options.items() if k != "lr"}
    fp, loss_grad, batches = demo.digits_problem(args.iterations, args.batch_size)
    print(
        f"choosing the learning rate of {cls.__name__}{options or ''} for the digits network "
        f"({fp.size} parameters): {args.iterations} updates on mini-batches of "
        f"{args.batch_size} per rate, training-set cost after each"
    )
    result = sweep(
        loss_grad, fp, optimizer=cls, iterations=args.iterations, batches=batches, **options
    )
    print(result.table())
    if args.plot:
        try:
            result.plot(args.plot)
            print(f"cost curves written to {args.plot}")
        except ImportError as error:
            print(f"no plot: {error}")
    if result.best_lr is None:
        return 1
    if args.train_epochs > 0:
        print(f"\ntraining with the chosen lr={result.best_lr:g}:")
        outcome = demo.train(
            args.optimizer, lr=result.best_lr, epochs=args.train_epochs, batch_size=args.batch_size
        )
        return 0 if outcome["test_accuracy"] > 0.5 else 1
    return 0
