"""ROC AUC from scores (rank statistic, ties averaged) and balanced accuracy: pure numpy, batched over
bootstrap replicates like the rest of ``metrics``."""

from __future__ import annotations

import numpy as np


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) along the last axis, ties sharing their mean rank."""
    order = np.argsort(x, axis=-1, kind="mergesort")
    sorted_x = np.take_along_axis(x, order, -1)
    ranks = np.empty_like(x, dtype=float)
    n = x.shape[-1]
    for idx in np.ndindex(*x.shape[:-1]):
        s = sorted_x[idx]
        first = np.r_[True, s[1:] != s[:-1]]
        starts = np.flatnonzero(first)
        ends = np.r_[starts[1:], n]
        avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks starts+1..ends
        r = np.repeat(avg, ends - starts)
        ranks[idx][order[idx]] = r
    return ranks


def binary_auc(y: np.ndarray, score: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + 0.5 P(tie); NaN when a class is absent."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = _ranks(np.asarray(score, dtype=float)[None])[0]
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def macro_ovr_auc(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean one-vs-rest AUC over the classes present (binary: the AUC of class 1's score)."""
    y = np.asarray(y)
    proba = np.asarray(proba, dtype=float)
    if proba.shape[1] == 2:
        return binary_auc(y == 1, proba[:, 1])
    vals = [binary_auc(y == c, proba[:, c]) for c in range(proba.shape[1])]
    vals = [v for v in vals if np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes present."""
    y, pred = np.asarray(y), np.asarray(pred)
    return float(np.mean([(pred[y == c] == c).mean() for c in np.unique(y)]))
