"""Ranking metrics of one finding — AUROC and average precision (AUPRC) — under row weights, batched
over replicates, and the threshold rules chosen on validation.

A replicate is a row-weight vector: 1 for the observed value, a patient's bootstrap count on its images
for a bootstrap replicate, group membership (0/1) for a group's value under a permutation of group
labels. The scores are sorted once; each replicate is then cumulative sums over the tied score levels:

    AUROC = sum_l P_l (N_<l + N_l / 2) / (P N)          (Mann-Whitney, ties counted half)
    AP    = sum_l P_l / P * TP_>=l / (TP_>=l + FP_>=l)  (scikit-learn's average_precision_score)

with P_l, N_l the weights of positives and negatives at score level l. Undefined (NaN) where a replicate
has no positive or no negative weight.
"""

from __future__ import annotations

import numpy as np

BLOCK = 1 << 22          # elements of one (replicates x rows) block


class Ranked:
    """One finding's labelled rows sorted by score, with their tied score levels. ``cols`` maps each row to
    its column of the weight matrices (its patient: replicate weights are per patient); default: the row.

    Sums run over rows, not levels: a row's "weight below" and "weight at or above" are read off cumulative sums
    at its own position and corrected, for the few rows that share a score, to their level's bounds — the same
    numbers as summing per level first, without a pass that reduces every replicate to its levels."""

    def __init__(self, truth: np.ndarray, score: np.ndarray, cols: np.ndarray | None = None):
        order = np.argsort(score, kind="mergesort")
        self.cols = (np.arange(len(score)) if cols is None else np.asarray(cols))[order]
        self.pos = np.asarray(truth)[order].astype(bool)
        s = np.asarray(score)[order]
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if len(s) else np.zeros(0, dtype=np.int64)
        sizes = np.diff(np.r_[starts, len(s)])
        shared = np.repeat(sizes > 1, sizes)
        self.tied = np.flatnonzero(shared)                           # rows whose score another row shares
        self.first = np.repeat(starts, sizes)[self.tied]             # ... their level's first row
        self.last = np.repeat(starts + sizes - 1, sizes)[self.tied]  # ... and last row

    def _rows(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(b, rows) positive and negative weight of each sorted row, of weight rows ``w`` (b, columns)."""
        w = w[:, self.cols]
        p = w * self.pos
        return p, w - p

    def _before(self, cum: np.ndarray) -> np.ndarray:
        """(b, tied rows) the cumulative sum just before each tied row's level (0 for the first level)."""
        out = cum[:, np.maximum(self.first - 1, 0)]
        out[:, self.first == 0] = 0
        return out

    def auroc(self, w: np.ndarray) -> np.ndarray:
        """(b,) AUROC of each weight row ``w`` (b, columns)."""
        p, n = self._rows(w)
        cn = np.cumsum(n, 1)
        below = cn - 0.5 * n                                        # negatives below, ties counted half
        if len(self.tied):
            before = self._before(cn)
            below[:, self.tied] = before + 0.5 * (cn[:, self.last] - before)
        total = p.sum(1) * (cn[:, -1] if cn.shape[1] else 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, np.einsum("bl,bl->b", p, below) / total, np.nan)

    def average_precision(self, w: np.ndarray) -> np.ndarray:
        """(b,) average precision of each weight row (thresholds from the highest score down)."""
        p, n = self._rows(w)
        cp, cn = np.cumsum(p, 1), np.cumsum(n, 1)
        total = cp[:, -1] if cp.shape[1] else np.zeros(len(w))
        tp = total[:, None] - cp + p                                # positives at or above each row's score
        fp = (cn[:, -1:] if cn.shape[1] else 0) - cn + n
        if len(self.tied):
            tp[:, self.tied] = total[:, None] - self._before(cp)
            fp[:, self.tied] = cn[:, -1:] - self._before(cn)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
            ap = np.einsum("bl,bl->b", p, precision) / total
        return np.where(total > 0, ap, np.nan)


def in_blocks(weights_of, n_rep: int, n_rows: int):
    """Yield weight blocks (b, n_rows) from ``weights_of(start, b)``, b bounded by BLOCK elements."""
    step = max(1, min(n_rep, BLOCK // max(n_rows, 1)))
    for start in range(0, n_rep, step):
        yield weights_of(start, min(step, n_rep - start))


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
