"""Ranking metrics of one finding — AUROC and average precision (AUPRC) — under row weights, batched
over replicates, and the threshold rules chosen on validation.

A replicate is a row-weight vector: 1 for the observed value, a patient's bootstrap count on its images
for a bootstrap replicate, group membership (0/1) for a group's value under a permutation of group
labels. Weights come as ``wt`` (columns, b): one replicate per column of the matrix, one row per column
of the design (a patient), so that gathering a row's weights copies b contiguous numbers.

    AUROC = sum_i w_i (N_<i + N_=i / 2) / (P N)          over positives i (Mann-Whitney, ties count half)
    AP    = sum_i w_i TP_>=i / (TP_>=i + FP_>=i) / P     over positives i (scikit-learn's average_precision_score)

with N_<i the negative weight scoring below positive i, N_=i the negative weight tied with it, TP_>=i and
FP_>=i the positive and negative weight scoring at least s_i. Each class is sorted once; the weight below
each position is a prefix sum read at the positions the other class needs (``_Prefix``). Undefined (NaN)
where a replicate has no positive or no negative weight.
"""

from __future__ import annotations

import numpy as np


_SUM = {"u": np.int32}     # small unsigned weights (counts, 0/1) are summed in int32: exact, and a quarter of the traffic


class _Prefix:
    """Weight of a sorted row set's rows before given positions (0..n), for weights (n, b).

    numpy's cumsum is sequential (~5 ns a number); summing the segments between the positions needed
    (``add.reduceat``, vectorised over replicates) and accumulating only those segments does the same sum
    at a fraction of the cost when the positions are fewer than the rows."""

    def __init__(self, n: int, positions: np.ndarray):
        bounds = np.unique(np.r_[0, positions].astype(np.int64))
        self.n, self.bounds = n, bounds[bounds < n]
        self.index = np.searchsorted(np.r_[self.bounds, n], positions)

    def __call__(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(len(positions), b) the weight before each position, and (b,) the total weight."""
        out = np.zeros((len(self.bounds) + 1, w.shape[1]), dtype=w.dtype if w.dtype.kind == "f" else np.int64)
        if self.n:
            np.cumsum(np.add.reduceat(w, self.bounds, axis=0, dtype=_SUM.get(w.dtype.kind, w.dtype)), 0, out=out[1:])
        return out[self.index], out[-1]


class Ranked:
    """One finding's labelled rows, positives and negatives each sorted by score. ``cols`` maps each row to
    its row of the weight matrices (its patient: replicate weights are per patient); default: the row."""

    def __init__(self, truth: np.ndarray, score: np.ndarray, cols: np.ndarray | None = None):
        truth, score = np.asarray(truth).astype(bool), np.asarray(score, dtype=float)
        cols = np.arange(len(score)) if cols is None else np.asarray(cols)
        sp, self.pos = _sorted(score[truth], cols[truth])
        sn, self.neg = _sorted(score[~truth], cols[~truth])
        lo, hi = np.searchsorted(sn, sp, "left"), np.searchsorted(sn, sp, "right")
        self.tied = not np.array_equal(lo, hi)
        self.pos_inner = len(sp) <= len(sn)          # AUROC reads prefix sums of the larger class at the smaller's rows
        if self.pos_inner:
            self.below = _Prefix(len(sn), np.r_[lo, hi])
        else:
            self.below = _Prefix(len(sp), np.r_[np.searchsorted(sp, sn, "left"), np.searchsorted(sp, sn, "right")])
        self.neg_below_pos = _Prefix(len(sn), lo)                             # for AP
        self.pos_below_pos = _Prefix(len(sp), np.searchsorted(sp, sp, "left"))

    def auroc(self, wt: np.ndarray) -> np.ndarray:
        """(b,) AUROC of each replicate (column) of the weights ``wt`` (columns, b)."""
        inner = np.take(wt, self.pos if self.pos_inner else self.neg, axis=0)
        below, outer_total = self.below(np.take(wt, self.neg if self.pos_inner else self.pos, axis=0))
        half = len(inner)                                         # below: outer weight below / at or below each inner row
        u = np.einsum("nb,nb->b", inner, below[:half] + below[half:], dtype=float) * 0.5 if self.tied else \
            np.einsum("nb,nb->b", inner, below[:half], dtype=float)
        total = inner.sum(0) * outer_total
        if not self.pos_inner:
            u = total - u                                         # positives above each negative, ties half
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, u / total, np.nan)

    def average_precision(self, wt: np.ndarray) -> np.ndarray:
        """(b,) average precision of each replicate (thresholds from the highest score down)."""
        wp = np.take(wt, self.pos, axis=0)
        pos_below, p = self.pos_below_pos(wp)
        neg_below, n = self.neg_below_pos(np.take(wt, self.neg, axis=0))
        tp, fp = p - pos_below, n - neg_below                     # weight at or above each positive's score
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
            return np.where(p > 0, np.einsum("nb,nb->b", wp, precision, dtype=float) / p, np.nan)


def _sorted(score: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(score, kind="mergesort")
    return score[order], cols[order]


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
