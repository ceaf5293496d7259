"""Small real datasets shipped with the package (see fastopt/data/README.md for sources)."""

from __future__ import annotations

import gzip
from importlib import resources

import numpy as np


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The UCI handwritten digits (1797 8x8 images, pixel counts 0..16, labels 0..9).

    Returns
    -------
    images : ndarray of shape (1797, 64), float64
    labels : ndarray of shape (1797,), int64

    Notes
    -----
    Optical Recognition of Handwritten Digits, E. Alpaydin and C. Kaynak, UCI Machine
    Learning Repository (CC BY 4.0); the test-set copy distributed with scikit-learn.
    """
    with resources.files("fastopt.cli").joinpath("data/digits.csv.gz").open("rb") as raw:
        table = np.loadtxt(gzip.open(raw, "rt"), delimiter=",")
    return table[:, :64], table[:, 64].astype(np.int64)
