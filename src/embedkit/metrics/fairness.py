"""Fairness metrics between two groups A and A' of one attribute (groups keyword-only).

Terms undefined in a group (a class without positives there, so no TPR or F1) are NaN and
excluded from the means; ``*_terms`` variants also return how many were excluded.
"""

from __future__ import annotations

import numpy as np

from embedkit.metrics import stats
from embedkit.metrics.classification import ece, ece_binned, f1_per_class, rates_per_class


def _masks(groups: np.ndarray, a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
    groups = np.asarray(groups)
    return groups == a, groups == b


def var_f1(y_true: np.ndarray, y_pred: np.ndarray, *, n_classes: int) -> float:
    """Population variance of the overall per-class F1."""
    return float(np.var(f1_per_class(y_true, y_pred, n_classes=n_classes)))


def f1_gap_terms(y_true, y_pred, *, groups, a: str, b: str, n_classes: int) -> tuple[float, int]:
    """(mean_c (F1_a^c - F1_b^c), number of classes excluded as undefined)."""
    ma, mb = _masks(groups, a, b)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    diff = (f1_per_class(y_true[ma], y_pred[ma], n_classes=n_classes, absent="nan")
            - f1_per_class(y_true[mb], y_pred[mb], n_classes=n_classes, absent="nan"))
    return float(np.nanmean(diff)) if np.isfinite(diff).any() else float("nan"), int(np.isnan(diff).sum())


def f1_gap(y_true, y_pred, *, groups, a: str, b: str, n_classes: int) -> float:
    """Signed F1 gap (1/C) sum_c (F1_a^c - F1_b^c), the paper's formula."""
    return f1_gap_terms(y_true, y_pred, groups=groups, a=a, b=b, n_classes=n_classes)[0]


def eqodds_terms(y_true, y_pred, *, groups, a: str, b: str, n_classes: int) -> tuple[float, int]:
    """(1/(2C) sum_c |TPR_a - TPR_b| + |FPR_a - FPR_b|, number of terms excluded as undefined)."""
    ma, mb = _masks(groups, a, b)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    ra = rates_per_class(y_true[ma], y_pred[ma], n_classes=n_classes)
    rb = rates_per_class(y_true[mb], y_pred[mb], n_classes=n_classes)
    terms = np.concatenate([np.abs(ra[0] - rb[0]), np.abs(ra[1] - rb[1])])
    return float(np.nanmean(terms)) if np.isfinite(terms).any() else float("nan"), int(np.isnan(terms).sum())


def eqodds(y_true, y_pred, *, groups, a: str, b: str, n_classes: int) -> float:
    """Equalized odds, mean of the per-class TPR and FPR gaps."""
    return eqodds_terms(y_true, y_pred, groups=groups, a=a, b=b, n_classes=n_classes)[0]


def ece_gap(y_true, proba, *, groups, a: str, b: str) -> float:
    """The paper's Eq. 4: |ECE_a - ECE_b| with the unbinned ECE (mean |p_i - o_i|)."""
    ma, mb = _masks(groups, a, b)
    y_true, proba = np.asarray(y_true), np.asarray(proba)
    return abs(ece(y_true[ma], proba[ma]) - ece(y_true[mb], proba[mb]))


def ece_binned_gap(y_true, proba, *, groups, a: str, b: str, n_bins: int = stats.N_BINS) -> float:
    """|ECE_a - ECE_b| with the binned ECE."""
    ma, mb = _masks(groups, a, b)
    y_true, proba = np.asarray(y_true), np.asarray(proba)
    return abs(ece_binned(y_true[ma], proba[ma], n_bins=n_bins) - ece_binned(y_true[mb], proba[mb], n_bins=n_bins))
