"""Lazy matplotlib import shared by every plot function (the ``plot`` extra)."""


def pyplot(headless):
    """Import matplotlib.pyplot, switching to the Agg backend when only writing a file."""
    try:
        import matplotlib

        if headless:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError('plotting needs matplotlib: pip install "fastopt[plot]"') from None
    return plt


def finish(ax, path):
    if path is not None:
        ax.figure.tight_layout()
        ax.figure.savefig(path, dpi=100)
    return ax
