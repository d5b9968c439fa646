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
    return _rank_sum_auc(np.asarray(y).astype(bool), _ranks(np.asarray(score, dtype=float)[None])[0])


def macro_ovr_auc(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean one-vs-rest AUC over the classes present (binary: the AUC of class 1's score)."""
    return ranked_macro_ovr_auc(y, score_ranks(proba))


def score_ranks(proba: np.ndarray) -> np.ndarray:
    """(K, N) midranks of the scores ``macro_ovr_auc`` reads: class 1's of two classes, else every class's."""
    proba = np.asarray(proba, dtype=float)
    return _ranks((proba[:, 1:] if proba.shape[1] == 2 else proba).T)


def ranked_macro_ovr_auc(y: np.ndarray, ranks: np.ndarray) -> float:
    """``macro_ovr_auc`` from ``score_ranks``. The ranks do not move when the labels are permuted, so a
    permutation null needs no sort."""
    y = np.asarray(y)
    vals = [_rank_sum_auc(y == c, r) for c, r in zip([1] if len(ranks) == 1 else range(len(ranks)), ranks)]
    vals = [v for v in vals if np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def _rank_sum_auc(pos: np.ndarray, ranks: np.ndarray) -> float:
    """Mann–Whitney AUC of the rows ``pos`` from every row's midrank; NaN when a class is absent."""
    n_pos = int(pos.sum())
    n_neg = len(pos) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes present."""
    y, pred = np.asarray(y), np.asarray(pred)
    return float(np.mean([(pred[y == c] == c).mean() for c in np.unique(y)]))
