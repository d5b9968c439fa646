"""Ranking metrics of one finding — AUROC and average precision (AUPRC) — under row weights, batched
over replicates, and the threshold rules chosen on validation.

A replicate is a row-weight vector: 1 for the observed value, a patient's bootstrap count on its images
for a bootstrap replicate. Weights come as ``wt`` (patients, b): one replicate per column, one row per
patient, so that reading a row's weights reads b contiguous numbers. Under a permutation every row weighs 1
and each patient carries a group label per replicate (``labels`` (patients, b)).

    AUROC = sum_i w_i (N_<i + N_=i / 2) / (P N)          over positives i (Mann-Whitney, ties count half)
    AP    = sum_i w_i TP_>=i / (TP_>=i + FP_>=i) / P     over positives i (scikit-learn's average_precision_score)

with N_<i the negative weight scoring below positive i, N_=i the negative weight tied with it, TP_>=i and
FP_>=i the positive and negative weight scoring at least s_i. Each finding is sorted once; one compiled pass
down its rows (``kernels``) gives every group's AUROC of a block of replicates. Undefined (NaN) where a
replicate has no positive or no negative weight.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np


MASKED_GROUPS = 5      # up to this many groups a permutation's pass masks each group (kernels.permuted_masked)


class Ranked:
    """One finding's labelled rows in the order of the descending pass. ``cols`` maps each row to its row of
    the weight and label matrices (its patient; default: the row); ``slots`` (rows, A) gives each row's group
    in each of A attributes, numbered 1..``n_slots`` across them (slot 0 is every row)."""

    def __init__(self, truth: np.ndarray, score: np.ndarray, cols: np.ndarray | None = None,
                 slots: np.ndarray | None = None, n_slots: int = 0):
        truth, score = np.asarray(truth).astype(bool), np.asarray(score, dtype=float)
        cols = np.arange(len(score)) if cols is None else np.asarray(cols)
        slots = np.zeros((len(score), 0)) if slots is None else np.asarray(slots)
        self.walk, self.n_slots = _walk(truth, score, cols, slots), n_slots

    @cached_property
    def perm_walk(self) -> tuple:
        """The walk of the permutation pass. AUROC counts the same pairs with the classes swapped and the scores
        negated, and a pass adds twice at a negative and once at a positive, so with fewer positives it walks
        the rows reversed, classes swapped (measured: 7 ms against 9 a block at 1-20 % prevalence). Reversed,
        a run's positives come first, as the swapped classes' negatives must; AP needs the scores' own order."""
        cols, neg, end, tied, _ = self.walk
        if neg.sum() <= len(neg) / 2:
            return cols, neg, end, tied
        last = np.r_[end[1:], True]                          # the highest row of each run: the lowest reversed
        return tuple(np.ascontiguousarray(a[::-1]) for a in (cols, ~neg, last, tied))

    def weighted(self, wt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(b, n_slots + 1) AUROC of every row (column 0) and of each slot's rows, and (b,) average precision
        of every row, for each replicate (column) of the weights ``wt`` (patients, b)."""
        from embedkit.metrics import kernels

        u, t, p, n, ap = kernels.weighted(*self.walk, self.n_slots, wt)
        return _ratio(u - 0.5 * t, p * n).T, _ratio(ap, p[0])

    def permuted(self, labels: np.ndarray, k: int, groups=None) -> np.ndarray:
        """(b, k) AUROC of groups 0..k-1 when each patient carries ``labels`` (patients, b), every row weighing 1;
        with ``groups``, of those groups alone (the others NaN)."""
        from embedkit.metrics import kernels

        groups = np.arange(k) if groups is None else np.asarray(groups)
        if len(groups) <= MASKED_GROUPS:
            u, t, p, n = kernels.permuted_masked(*self.perm_walk, labels, k, groups.astype(labels.dtype))
        else:
            u, t, p, n = kernels.permuted(*self.perm_walk, labels, k)
        return _ratio(u - 0.5 * t, p * n).T


def _walk(truth: np.ndarray, score: np.ndarray, cols: np.ndarray, slots: np.ndarray) -> tuple:
    """(cols, neg, end, tied, slots) of the rows in ascending score, in a tie run the negatives first (a pass
    walks down); end: the lowest row of its run of equal scores; tied: in a run holding both classes."""
    order = np.lexsort((truth, score))
    s, y = score[order], truth[order]
    start = np.r_[True, s[1:] != s[:-1]]
    run = np.cumsum(start) - 1
    mixed = (np.bincount(run, weights=y) > 0) & (np.bincount(run, weights=~y) > 0)
    return cols[order].astype(np.int64), ~y, start, mixed[run], slots[order].astype(np.int64)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / b, np.nan)


# ---- thresholds, chosen on validation -------------------------------------------------------------

RULES = ("f1", "youden", "fpr:X")     # the default (spec.TASK.threshold) is f1, as Seyyed-Kalantari et al. 2021


def check_rule(rule: str) -> str:
    """``f1``, ``youden`` or ``fpr:X`` (0 < X < 1), else a clear error."""
    from embedkit.errors import EmbedkitError

    if rule in ("f1", "youden"):
        return rule
    if rule.startswith("fpr:"):
        try:
            x = float(rule[4:])
        except ValueError:
            x = -1.0
        if 0 < x < 1:
            return rule
    raise EmbedkitError(f"--threshold {rule!r}: choose f1, youden or fpr:X with 0 < X < 1 (e.g. fpr:0.1)")


def choose_threshold(truth: np.ndarray, score: np.ndarray, rule: str) -> float:
    """The threshold (predict positive when score >= t) that ``rule`` picks on these (validation) rows:
    ``f1`` maximises F1, ``youden`` maximises TPR - FPR, ``fpr:X`` the largest TPR with FPR <= X.
    Candidates are the observed scores; ties go to the higher threshold. NaN truths are left out;
    0.5 when a class is absent (nothing to choose from)."""
    rule = check_rule(rule)
    keep = np.isfinite(truth)
    y, s = truth[keep].astype(bool), score[keep]
    if y.all() or not y.any():
        return 0.5
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last = np.r_[s[1:] != s[:-1], True]              # the end of each tied level, highest score first
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    thresholds = s[last]
    P, N = y.sum(), (~y).sum()
    if rule == "f1":
        value = 2 * tp / (tp + fp + P)
    elif rule == "youden":
        value = tp / P - fp / N
    else:
        value = np.where(fp / N <= float(rule[4:]), tp / P, -1.0)
    return float(thresholds[int(np.argmax(value))])
