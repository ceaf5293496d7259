"""Command line: ``python -m fastopt demo [--optimizer adam] [--epochs 30] [--lr 3e-3]``."""
import argparse
import sys


def main(argv=None):
    from . import demo

    parser = argparse.ArgumentParser(prog="python -m fastopt", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("demo", help="train a small network on the bundled UCI digits")
    run.add_argument("--optimizer", choices=sorted(demo.OPTIMIZERS), default="adam")
    run.add_argument("--lr", type=float, default=None, help="learning rate (default: per optimizer)")
    run.add_argument("--epochs", type=int, default=30)
    run.add_argument("--batch-size", type=int, default=64)
    run.add_argument("--float64", action="store_true", help="use float64 buffers")
    args = parser.parse_args(argv)
    if args.command == "demo":
        import numpy as np
        result = demo.train(args.optimizer, lr=args.lr, epochs=args.epochs,
                            batch_size=args.batch_size,
                            dtype=np.float64 if args.float64 else np.float32)
        return 0 if result["test_accuracy"] > 0.5 else 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
