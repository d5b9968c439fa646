"""Utility metrics on labels and probabilities (one-vs-rest per class)."""

from __future__ import annotations

import numpy as np

from embedkit.metrics import stats


def _as_batch(*arrays: np.ndarray) -> list[np.ndarray]:
    return [np.asarray(a)[None] for a in arrays]


def _cm(y_true, y_pred, n_classes: int) -> np.ndarray:
    yt, yp = _as_batch(y_true, y_pred)
    return stats.confusion(yt, yp, np.zeros_like(yt), n_classes=n_classes, n_cells=1)[0, 0]


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of correct predictions."""
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def f1_per_class(y_true: np.ndarray, y_pred: np.ndarray, *, n_classes: int, absent: str = "zero") -> np.ndarray:
    """F1 per class; ``absent="zero"`` matches sklearn's zero_division=0, ``"nan"`` marks classes
    without positives as undefined."""
    return stats.f1_from(_cm(y_true, y_pred, n_classes), absent=absent)


def rates_per_class(y_true: np.ndarray, y_pred: np.ndarray, *, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(TPR, FPR) per class: P(pred = c | y = c) and P(pred = c | y != c); NaN where undefined."""
    return stats.rates_from(_cm(y_true, y_pred, n_classes))


def ece(y_true: np.ndarray, proba: np.ndarray, *, n_bins: int = stats.N_BINS) -> float:
    """Expected calibration error of the top-class confidence, equal-width bins over [0, 1]."""
    proba = np.asarray(proba, dtype=float)
    pred = proba.argmax(1)
    conf, correct = _as_batch(proba.max(1), (pred == np.asarray(y_true)).astype(float))
    cal = stats.calibration(conf, correct, np.zeros(conf.shape, dtype=np.int64), n_cells=1, n_bins=n_bins)
    return float(stats.ece_from(cal)[0, 0])
