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


def _calibration(y_true, proba, n_bins: int) -> np.ndarray:
    proba = np.asarray(proba, dtype=float)
    pred = proba.argmax(1)
    conf, correct = _as_batch(proba.max(1), (pred == np.asarray(y_true)).astype(float))
    return stats.calibration(conf, correct, np.zeros(conf.shape, dtype=np.int64), n_cells=1, n_bins=n_bins)


def ece(y_true: np.ndarray, proba: np.ndarray) -> float:
    """The paper's ECE (Eq. 4): mean |p_i - o_i| of the top-class probability p_i and its correctness o_i."""
    return float(stats.ece_from(_calibration(y_true, proba, 1))[0, 0])


def ece_binned(y_true: np.ndarray, proba: np.ndarray, *, n_bins: int = stats.N_BINS) -> float:
    """Binned ECE of the top-class confidence, equal-width bins over [0, 1] (Guo et al. 2017)."""
    return float(stats.ece_binned_from(_calibration(y_true, proba, n_bins))[0, 0])
