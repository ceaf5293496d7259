"""Draws docs/schedules.png: python docs/plot_schedules.py (needs the plot extra)."""

import os

import matplotlib
import numpy as np

from fastopt import schedules as S

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GROUPS = [
    (
        "decay",
        [
            S.step_decay(0.1, 250, 0.5),
            S.exponential_decay(0.1, 0.5, 250),
            S.inverse_time_decay(0.1, 1.0, 100),
            S.polynomial_decay(0.1, 800, 0.005, 2.0),
        ],
    ),
    ("cosine", [S.cosine_decay(0.1, 1000), S.cosine_restarts(0.1, 100, 2), S.one_cycle(0.1, 1000)]),
    (
        "warm-up",
        [
            S.warmup_cosine_decay(0.1, 100, 1000),
            S.warmup(S.exponential_decay(0.1, 0.5, 250), 100),
            S.linear_warmup(0.1, 200),
        ],
    ),
    (
        "piecewise / join",
        [
            S.multistep_decay(0.1, [300, 600, 900], 0.3),
            S.piecewise_constant([200, 500], [0.05, 0.1, 0.02]),
            S.join([S.constant(0.02), S.cosine_decay(0.1, 700)], [300]),
        ],
    ),
]


def main():
    fig, axes = plt.subplots(2, 2, figsize=(10, 6))
    t = np.arange(1000)
    for ax, (title, schedules) in zip(axes.flat, GROUPS):
        for schedule in schedules:
            ax.plot(t, schedule(t), label=schedule.name)
        ax.set_title(title)
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    fig.supxlabel("step (updates applied)")
    fig.supylabel("learning rate")
    fig.tight_layout()
    fig.savefig(os.path.join(os.path.dirname(__file__), "schedules.png"), dpi=80)


if __name__ == "__main__":
    main()
