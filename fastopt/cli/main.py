"""The command line: ``fastopt COMMAND ...`` (or ``python -m fastopt COMMAND ...``).

Exit status: 0 on success; 1 when the work ran but found a problem (no rate picked, a failed
gradient check, an error raised by the user's code, a demo that did not learn); 2 for a bad
argument, reported in one line before any work.
"""

import os
import sys
import traceback

from . import arguments as a
from .arguments import CommandError, Parser

DESCRIPTION = """\
Choose a learning rate and check a gradient, for your own problem or the bundled digits
network; benchmark the optimizers.

  sweep PROBLEM        short runs at a ladder of rates from one starting point; picks one
  sweep --demo         the same on the bundled digits network, then trains with the pick
  range-test PROBLEM   one run with an exponentially growing rate (a quick first range)
  check-grad PROBLEM   compares the gradient with finite differences (exit 1 if wrong)
  demo                 trains the digits network with a given optimizer and rate
  bench                step times against NumPy, torch and a bandwidth ceiling

PROBLEM is path/to/file.py:function or package.module:function: a function without
arguments returning (loss_grad, params), (loss_grad, params, batches) or a dict with
those keys. loss_grad(params, grad[, batch]) returns the cost and writes the gradient
into grad; batches is a sequence of mini-batches or a function returning an iterator.
"""

DEFAULT_LRS = "1e-4 3e-4 1e-3 3e-3 1e-2 3e-2 0.1 0.3 1 3"


PROBLEM_HELP = "path/to/file.py:function or package.module:function"


def _problem(command, optional=False):
    extra = {"nargs": "?", "default": None} if optional else {}
    command.add_argument("problem", metavar="PROBLEM", help=PROBLEM_HELP, **extra)


def _optimizer(command, note=""):
    command.add_argument(
        "--optimizer", choices=sorted(_optimizer_names()), default="sgd", help="the optimizer"
    )
    command.add_argument(
        "-o", "--option", type=a.option, action="append", default=[], metavar="KEY=VALUE",
        help=f"an optimizer option, repeatable: -o momentum=0.9 -o betas=(0.9,0.99){note}",
    )  # fmt: skip


def _json(command, what="results"):
    command.add_argument("--json", type=a.output_path, default=None, metavar="FILE",
                         help=f"also write the {what} to this JSON file")  # fmt: skip


def _plot(command, kind=a.plot_path, note=" (needs fastopt[plot])"):
    command.add_argument("--plot", type=kind, default=None, metavar="FILE",
                         help=f"draw the cost curves into this image{note}")  # fmt: skip


def _optimizer_names():
    from .tools import OPTIMIZERS

    return OPTIMIZERS


def build_parser(prog="fastopt"):
    from . import demo as demo_module

    parser = Parser(prog=prog, description=DESCRIPTION, formatter_class=a.DescriptionAsIs)
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )

    sweep = commands.add_parser(
        "sweep",
        help="choose a learning rate with the grid sweep",
        description="Short runs at a ladder of learning rates, "
        "each from the same starting point; picks the rate that "
        "decreases the cost fastest and consistently.",
    )
    _problem(sweep, optional=True)
    sweep.add_argument(
        "--demo", action="store_true", help="sweep the bundled digits network instead of a PROBLEM"
    )
    _optimizer(sweep, note=" (with a PROBLEM)")
    sweep.add_argument("--lrs", type=a.nonnegative_float, nargs="+", default=None,
                       metavar="LR", help=f"the rates to try (default: {DEFAULT_LRS})")  # fmt: skip
    sweep.add_argument("--iterations", type=a.positive_int, default=None,
                       help="updates per rate (default: 50, or 60 with --demo)")  # fmt: skip
    sweep.add_argument("--batch-size", type=a.positive_int, default=64,
                       help="mini-batch size (with --demo)")  # fmt: skip
    sweep.add_argument("--train-epochs", type=a.nonnegative_int, default=20,
                       help="with --demo: then train this many epochs with the pick")  # fmt: skip
    _json(sweep)
    _plot(sweep, a.optional_plot_path, ", '' for none (default: sweep.png with --demo "
          "when matplotlib is installed)")  # fmt: skip

    range_test = commands.add_parser(
        "range-test",
        help="a learning-rate range test (one run, growing rate)",
        description="One run in which the learning rate grows exponentially from --min-lr "
        "to --max-lr; suggests a range to confirm with the sweep.",
    )
    _problem(range_test)
    _optimizer(range_test)
    _json(range_test)
    _plot(range_test)
    range_test.add_argument("--min-lr", type=a.positive_float, default=1e-7, help="the first rate")
    range_test.add_argument("--max-lr", type=a.positive_float, default=10.0, help="the last rate")
    range_test.add_argument(
        "--iterations", type=a.positive_int, default=100, help="updates in the run"
    )
    range_test.add_argument(
        "--repeats",
        type=a.positive_int,
        default=1,
        help="runs from the same start, reporting the spread of each suggestion",
    )

    check = commands.add_parser(
        "check-grad",
        help="check a gradient with finite differences",
        description="Compares the gradient loss_grad writes with central finite "
        "differences on a sample of coordinates of every array; exit status 1 if it is "
        "wrong.",
    )
    _problem(check)
    check.add_argument(
        "--eps",
        type=a.positive_float,
        default=None,
        help="the absolute finite-difference step h, x +/- h for every coordinate "
        "(default: cbrt(machine epsilon) x max(1, |x|), from the dtype and each value)",
    )
    check.add_argument(
        "--tolerance",
        type=a.positive_float,
        default=None,
        help="largest relative error accepted (default: from the dtype)",
    )
    check.add_argument(
        "--seed", type=a.nonnegative_int, default=0, help="seed of the sampled coordinates"
    )
    _json(check, "result")

    demo = commands.add_parser(
        "demo",
        help="train a small network on the bundled UCI digits",
        description="Trains a 64-64-10 network on the bundled UCI "
        "digits with plain NumPy and one fastopt optimizer.",
    )
    demo.add_argument(
        "--optimizer", choices=sorted(demo_module.OPTIMIZERS), default="adam", help="the optimizer"
    )
    demo.add_argument(
        "--lr", type=a.positive_float, default=None, help="learning rate (default: per optimizer)"
    )
    demo.add_argument("--epochs", type=a.positive_int, default=30, help="training epochs")
    demo.add_argument("--batch-size", type=a.positive_int, default=64, help="mini-batch size")
    demo.add_argument("--float64", action="store_true", help="use float64 buffers")

    bench = commands.add_parser(
        "bench",
        help="step time vs bandwidth ceiling, NumPy and torch",
        description="Median step times of every optimizer, "
        "alternated in one process with naive NumPy, torch (fused "
        "and foreach) and a stream kernel moving the same bytes.",
    )
    from .bench import CONFIGS

    bench.add_argument(
        "--sizes",
        nargs="+",
        type=a.positive_int,
        default=[1000, 100_000, 10_000_000],
        metavar="N",
        help="parameter counts (1e7 is fine)",
    )
    bench.add_argument(
        "--optimizers",
        nargs="+",
        choices=list(CONFIGS),
        default=None,
        metavar="NAME",
        help=f"from: {' '.join(CONFIGS)} (default: all)",
    )
    bench.add_argument(
        "--dtype", choices=["float32", "float64"], default="float32", help="buffer dtype"
    )
    bench.add_argument(
        "--rounds",
        type=a.positive_int,
        default=15,
        help="alternated rounds (x20 up to 1e5, /3 above 1e7)",
    )
    bench.add_argument(
        "--threads",
        type=a.thread_count,
        default=None,
        help="threads for fastopt and torch (default: numba's)",
    )
    bench.add_argument(
        "--precision",
        choices=["full", "bfloat16", "8bit"],
        default="full",
        help="state_precision of fastopt's optimizers (compact state is also timed against "
        "fastopt's full-precision step, column 'x full'); an optimizer without it is an "
        "error when named in --optimizers, skipped with a note otherwise",
    )
    bench.add_argument("--no-numpy", action="store_true", help="skip the (slow) NumPy baseline")
    bench.add_argument("--no-torch", action="store_true", help="skip torch")
    _json(bench)
    return parser


def main(argv=None, prog=None):
    """Run the command line; returns the exit status. ``prog`` (the name in messages)
    defaults to how it was started: ``python -m fastopt`` or the ``fastopt`` script.
    """
    if prog is None:
        name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "fastopt"
        prog = "python -m fastopt" if name == "__main__.py" else name
    from ..lr.range_test import RangeTestFailed
    from ..lr.sweep import SweepFailed

    parser = build_parser(prog)
    args = parser.parse_args(argv)
    command = f"{prog} {args.command}"
    try:
        return _dispatch(args)
    except CommandError as error:
        print(f"{command}: error: {error}", file=sys.stderr)
        return 2
    except (a.UserCodeFailed, SweepFailed, RangeTestFailed) as error:
        traceback.print_exception(error.__cause__)
        print(f"{command}: {error}", file=sys.stderr)
        return 1
    except (ValueError, TypeError) as error:  # fastopt's own checks, before any work
        print(f"{command}: error: {error}", file=sys.stderr)
        return 2


def _dispatch(args):
    from . import tools

    if args.command == "sweep":
        if args.demo == (args.problem is not None):
            raise CommandError("give a PROBLEM or --demo (one of them)")
        if args.demo:
            if args.option:
                raise CommandError("--option works with a PROBLEM; --demo uses its own options")
            args.iterations = args.iterations or 60
            return tools.run_sweep_demo(args)
        args.iterations = args.iterations or 50
        return tools.run_sweep(args)
    if args.command == "range-test":
        return tools.run_range_test(args)
    if args.command == "check-grad":
        return tools.run_check_grad(args)
    if args.command == "bench":
        from . import bench

        bench.run(
            args.sizes,
            args.optimizers or tuple(bench.CONFIGS),
            args.dtype,
            args.rounds,
            args.threads,
            not args.no_numpy,
            not args.no_torch,
            args.json,
            precision=args.precision,
            skip_unsupported=args.optimizers is None,
        )
        return 0
    import numpy as np

    from . import demo

    result = demo.train(
        args.optimizer,
        lr=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        dtype=np.float64 if args.float64 else np.float32,
    )
    if result["test_accuracy"] <= 0.5:
        print(f"the network did not learn: test accuracy {result['test_accuracy']:.3f}")
        return 1
    return 0
