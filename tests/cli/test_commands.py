"""The command line on the user's own problem, run as a user runs it: a subprocess."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

PROBLEM = textwrap.dedent(
    """
    import numpy as np
    import fastopt

    TARGET = np.array([1.0, -2.0, 3.0, 0.5])

    def quadratic():
        x = np.zeros(4)

        def loss_grad(params, grad):
            grad[:] = params - TARGET
            return 0.5 * float(np.sum((params - TARGET) ** 2))

        return loss_grad, x

    def named():
        fp = fastopt.FlatParams({"w": np.zeros((2, 2)), "b": np.zeros(2)})

        def loss_grad(params, grad):
            w, b = params.params["w"], params.params["b"]
            params.grads["w"][:] = w - 1.0
            params.grads["b"][:] = 3 * (b + 1.0)  # the bias gradient is 3x too large
            return 0.5 * float(np.sum((w - 1.0) ** 2) + np.sum((b + 1.0) ** 2))

        return {"loss_grad": loss_grad, "params": fp}

    def batched():
        loss_grad, x = quadratic()
        batches = [None] * 100
        return loss_grad_batch(loss_grad), x, batches

    def loss_grad_batch(loss_grad):
        return lambda params, grad, batch: loss_grad(params, grad)

    def raising():
        x = np.zeros(4)
        calls = [0]

        def loss_grad(params, grad):
            calls[0] += 1
            if calls[0] > 30:
                raise RuntimeError("the model blew up")
            grad[:] = params - TARGET
            return 0.5 * float(np.sum((params - TARGET) ** 2))

        return loss_grad, x

    def counted():
        open(MARKER, "a").write("called\\n")
        return quadratic()

    def wrong_form():
        return 42

    def big_float32():
        fp = fastopt.FlatParams({"w": np.full(3, 1e6, np.float32)})

        def loss_grad(params, grad):
            w = params.params["w"].astype(np.float64)
            grad[:] = 2 * (w - 1e6 + 1)
            return float(np.sum((w - 1e6 + 1) ** 2))

        return loss_grad, fp

    def nan_params():
        loss_grad, x = quadratic()
        x[0] = np.nan
        return loss_grad, x

    def no_batches():
        return loss_grad_batch(quadratic()[0]), np.zeros(4), []

    def broken_loader():
        def batches():
            raise RuntimeError("the data loader broke")

        return loss_grad_batch(quadratic()[0]), np.zeros(4), batches

    def sqrt_at_zero():
        def loss_grad(params, grad):
            grad[:] = 1.0
            with np.errstate(invalid="ignore"):
                return float(np.sqrt(params[0]))

        return loss_grad, np.zeros(1)
    """
)


@pytest.fixture()
def problem_file(tmp_path):
    path = tmp_path / "my_problem.py"
    marker = tmp_path / "marker.txt"
    path.write_text(f"MARKER = {str(marker)!r}\n" + PROBLEM)
    return path


def fastopt(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "fastopt", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def assert_one_line_error(result, *parts):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("python -m fastopt ")
    for part in parts:
        assert part in lines[0], lines[0]


def test_sweep_a_problem_file_with_json_and_plot(problem_file, tmp_path):
    pytest.importorskip("matplotlib")
    out_json, png = tmp_path / "sweep.json", tmp_path / "sweep.png"
    result = fastopt(
        "sweep", f"{problem_file}:quadratic", "--optimizer", "sgd", "-o", "momentum=0.1",
        "--lrs", "0.01", "0.3", "3", "--iterations", "20", "--json", out_json, "--plot", png,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("sweep: SGD(momentum=0.1), 20 updates per run")
    data = json.loads(out_json.read_text())
    assert data["lrs"] == [0.01, 0.3, 3.0] and data["best_lr"] == 0.3
    assert data["options"] == {"momentum": 0.1} and len(data["costs"][0]) == 21
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_a_module_problem_and_batches(problem_file):
    result = fastopt(
        "sweep", "my_problem:batched", "--lrs", "0.1", "0.5", "--iterations", "10",
        cwd=problem_file.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "pick: lr=0.5" in result.stdout


def test_range_test_command(problem_file, tmp_path):
    out_json = tmp_path / "range.json"
    result = fastopt(
        "range-test", f"{problem_file}:quadratic", "--min-lr", "1e-4", "--max-lr", "100",
        "--iterations", "60", "--repeats", "2", "--json", out_json,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "suggestion" in result.stdout
    data = json.loads(out_json.read_text())
    assert data["lrs"][0] == pytest.approx(1e-4) and data["repeats"] == 2
    assert data["valley_lr"] is not None and len(data["runs"]) == 2


def test_check_grad_names_the_wrong_array_and_exits_1(problem_file, tmp_path):
    out_json = tmp_path / "check.json"
    bad = fastopt("check-grad", f"{problem_file}:named", "--json", out_json)
    assert bad.returncode == 1, bad.stderr
    assert "FAILED" in bad.stdout and "b[" in bad.stdout
    assert json.loads(out_json.read_text())["ok"] is False
    good = fastopt("check-grad", f"{problem_file}:quadratic")
    assert good.returncode == 0 and "passed" in good.stdout


def test_an_error_in_the_users_code_shows_its_traceback_and_the_rate(problem_file):
    result = fastopt("sweep", f"{problem_file}:raising", "--lrs", "0.1", "0.2", "--iterations",
                     "20")  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "RuntimeError: the model blew up" in result.stderr
    assert "lr=0.2, evaluating the cost after update 9" in result.stderr.splitlines()[-1]


@pytest.mark.parametrize(
    "args, parts",
    [
        (["sweep", "--demo", "--iterations", "0"], ["--iterations", "expected an integer >= 1"]),
        (["demo", "--lr", "-1"], ["--lr", "expected a number > 0, got -1"]),
        (["demo", "--batch-size", "0"], ["--batch-size"]),
        (["demo", "--epochs", "0"], ["--epochs", "expected an integer >= 1, got 0"]),
        (["bench", "--sizes", "0"], ["--sizes"]),
        (["bench", "--sizes", "-5"], ["--sizes", "got -5"]),
        (["bench", "--sizes", "1.5"], ["--sizes", "expected an integer, got '1.5'"]),
        (["bench", "--threads", "99"], ["--threads", "got 99"]),
        (["bench", "--threads", "0"], ["--threads"]),
        (["bench", "--rounds", "0"], ["--rounds"]),
        (["sweep", "--demo", "--plot", "/nonexistent/dir/x.png"], ["no folder /nonexistent/dir"]),
        (["sweep", "--demo", "--json", "/nonexistent/x.json"], ["--json", "no folder"]),
        (["sweep"], ["give a PROBLEM or --demo"]),
        (["sweep", "nofile.py:f"], ["PROBLEM file not found: nofile.py"]),
        (["check-grad", "no_such_module:f"], ["PROBLEM module not found: no_such_module"]),
        (["range-test", "x.py"], ["PROBLEM must be path/to/file.py:function"]),
        (["sweep", "--lrs", "-1", "--demo"], ["--lrs", "expected a number >= 0"]),
        (["sweep", "-o", "momentum", "--demo"], ["expected KEY=VALUE"]),
    ],
)
def test_argument_errors_are_one_line_with_status_2(args, parts):
    assert_one_line_error(fastopt(*args), *parts)


def test_problem_errors_are_found_before_any_work(problem_file, tmp_path):
    spec = f"{problem_file}:quadratic"
    assert_one_line_error(fastopt("sweep", spec, "-o", "momentum=-1"),
                          "SGD(momentum=-1)", "Invalid momentum value: -1")  # fmt: skip
    assert_one_line_error(fastopt("sweep", spec, "-o", "betas=(0.9,0.99)"),
                          "SGD has no option 'betas'", "momentum")  # fmt: skip
    assert_one_line_error(fastopt("sweep", f"{problem_file}:missing"), "has no function 'missing'")
    assert_one_line_error(fastopt("sweep", f"{problem_file}:wrong_form"), "returned int")
    marker = tmp_path / "marker.txt"
    assert_one_line_error(
        fastopt("sweep", f"{problem_file}:counted", "--plot", tmp_path / "nowhere" / "x.png"),
        "no folder",
    )
    assert not marker.exists()  # the output path was checked before the problem was built


def test_help_shows_defaults_and_no_markup():
    text = fastopt("sweep", "--help").stdout
    assert "(default: sgd)" in text and "(default: 64)" in text and "``" not in text
    top = fastopt("--help").stdout
    assert "check-grad PROBLEM" in top and "``" not in top
    bench = fastopt("bench", "--help").stdout
    assert "(default: 15)" in bench


def test_the_console_script_calls_itself_fastopt(tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "fastopt")
    if not os.path.exists(script):
        pytest.skip("the fastopt script is not installed next to this interpreter")
    result = subprocess.run([script, "sweep"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("fastopt sweep: error: give a PROBLEM or --demo")


def test_an_error_in_a_range_test_names_the_update(problem_file):
    result = fastopt("range-test", f"{problem_file}:raising", "--iterations", "50")
    assert result.returncode == 1
    assert "RuntimeError: the model blew up" in result.stderr
    assert "the range test failed at update 30" in result.stderr.splitlines()[-1]


def test_a_plot_format_matplotlib_cannot_write_is_refused_before_any_work(problem_file, tmp_path):
    pytest.importorskip("matplotlib")
    result = fastopt("sweep", f"{problem_file}:counted", "--plot", tmp_path / "curves.xyz")
    assert_one_line_error(result, "argument --plot", "cannot save .xyz images", "png")
    assert not (tmp_path / "marker.txt").exists()  # refused before the PROBLEM was built


def test_a_plot_path_without_extension_reports_the_file_written(problem_file, tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib import rcParams

    plain = tmp_path / "curves"
    result = fastopt("sweep", f"{problem_file}:quadratic", "--lrs", "0.1", "--iterations", "3",
                     "--plot", plain)  # fmt: skip
    assert result.returncode == 0, result.stderr
    written = f"{plain}.{rcParams['savefig.format']}"
    assert f"plot written to {written}\n" in result.stdout and os.path.isfile(written)
    assert not plain.exists()


def test_check_grad_refusals_are_one_line_errors(problem_file):
    spec = f"{problem_file}:"
    assert_one_line_error(fastopt("check-grad", spec + "big_float32", "--eps", "1e-5"),
                          "--eps 1e-05: Invalid eps: 1e-05 (too small for w[0]")  # fmt: skip
    assert_one_line_error(fastopt("check-grad", spec + "nan_params"),
                          "nan_params: the parameters must be finite", "[0] = nan")  # fmt: skip
    assert_one_line_error(fastopt("check-grad", spec + "no_batches"),
                          "no_batches: Invalid batches: 0 batches (expected at least")  # fmt: skip


def test_check_grad_on_batches_that_raise_shows_the_users_traceback(problem_file):
    result = fastopt("check-grad", f"{problem_file}:broken_loader")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "RuntimeError: the data loader broke" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == "python -m fastopt check-grad: batches() raised RuntimeError"


def test_check_grad_json_is_strict_when_the_difference_is_not_finite(problem_file, tmp_path):
    out_json = tmp_path / "check.json"
    result = fastopt("check-grad", f"{problem_file}:sqrt_at_zero", "--json", out_json)
    assert result.returncode == 1 and "FAILED" in result.stdout, result.stderr

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    data = json.loads(out_json.read_text(), parse_constant=refuse)
    assert data["numeric"] == [None] and data["max_rel_error"] == "inf"


def test_a_module_whose_own_import_fails_is_the_users_error(tmp_path):
    (tmp_path / "models_v2.py").write_text("import models\n\ndef problem():\n    pass\n")
    result = fastopt("sweep", "models_v2:problem", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "ModuleNotFoundError: No module named 'models'" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == "python -m fastopt sweep: importing models_v2 raised ModuleNotFoundError"


def test_sweep_demo_uses_the_given_rates(tmp_path):
    out_json = tmp_path / "sweep.json"
    result = fastopt("sweep", "--demo", "--lrs", "0.01", "0.1", "--iterations", "3",
                     "--train-epochs", "0", "--plot", "", "--json", out_json)  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    data = json.loads(out_json.read_text())
    assert data["lrs"] == [0.01, 0.1] and len(data["costs"]) == 2


def test_help_shows_a_default_of_zero_but_not_none_false_or_empty():
    from fastopt.cli.arguments import Parser

    parser = Parser(prog="p")
    parser.add_argument("--zero", type=int, default=0, help="an int")
    parser.add_argument("--zero-float", type=float, default=0.0, help="a float")
    parser.add_argument("--none", default=None, help="unset")
    parser.add_argument("--flag", action="store_true", help="a flag")
    parser.add_argument("--many", nargs="+", default=[], help="a list")
    text = " ".join(parser.format_help().split())
    assert "an int (default: 0)" in text and "a float (default: 0.0)" in text
    assert "unset --flag" in text and "a flag --many" in text and text.count("(default:") == 2
    check = " ".join(fastopt("check-grad", "--help").stdout.split())
    assert "seed of the sampled coordinates (default: 0)" in check
    assert "--eps EPS the absolute finite-difference step h" in check
