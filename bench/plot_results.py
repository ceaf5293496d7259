"""Draw step time against size from ``python -m fastopt bench --json`` output.

Usage: python bench/plot_results.py results.json [--optimizer adam] [--out docs/performance.png]

One panel: median step time of fastopt, naive NumPy, torch fused and torch foreach, and
the traffic-matched bandwidth kernel ("stream", the ceiling), all measured alternately in
the same process.
"""

import argparse
import json

STYLE = {
    "fastopt": ("C0", "o", "fastopt"),
    "stream": ("k", "", "bandwidth ceiling (stream)"),
    "numpy": ("C1", "s", "NumPy (naive)"),
    "torch_fused": ("C3", "^", "torch fused"),
    "torch_foreach": ("C2", "v", "torch foreach"),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("results")
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--out", default="docs/performance.png")
    args = parser.parse_args()
    import matplotlib  # imported here: asv imports every module in bench/

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(args.results) as f:
        data = json.load(f)
    rows = sorted(
        (r for r in data["rows"] if r["optimizer"] == args.optimizer), key=lambda r: r["size"]
    )
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, (color, marker, label) in STYLE.items():
        points = [(r["size"], r["median_s"][key] * 1e3) for r in rows if key in r["median_s"]]
        if points:
            x, y = zip(*points)
            ax.plot(
                x, y, color=color, marker=marker, ls="--" if key == "stream" else "-", label=label
            )
    h = data["header"]
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("step time (ms)")
    ax.set_title(
        f"{args.optimizer} step, {rows[0]['dtype']}, {h['threads']} threads "
        f"(torch {h['torch']}, numba {h['numba']})",
        fontsize="medium",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
