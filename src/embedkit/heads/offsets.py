"""Per-group decision offsets: a multi-class take on Hardt et al.'s equalised-odds post-processing
(fairlearn's ThresholdOptimizer is the binary reference). Each group g gets offsets b_g added to the
log-probabilities, found on validation by coordinate search to bring the group's per-class TPR and FPR
to the pooled ones, while its validation accuracy may not drop by more than ``--strength`` (0.02)."""

from __future__ import annotations

import numpy as np

from embedkit.heads.base import register
from embedkit.heads.posthoc import PostProcessing, softmax

STEPS = (-1.0, -0.5, -0.25, -0.1, 0.1, 0.25, 0.5, 1.0)
SWEEPS = 3


def _rates(pred: np.ndarray, y: np.ndarray, c: int) -> np.ndarray:
    """(2, C): one-vs-rest TPR and FPR per class (0 where undefined)."""
    out = np.zeros((2, c))
    for k in range(c):
        pos, neg = y == k, y != k
        out[0, k] = (pred[pos] == k).mean() if pos.any() else 0.0
        out[1, k] = (pred[neg] == k).mean() if neg.any() else 0.0
    return out


def fit_offsets(logp: np.ndarray, y: np.ndarray, target: np.ndarray, max_drop: float) -> np.ndarray:
    """Offsets (C,) for one group: the smallest distance of its rates to ``target`` keeping accuracy."""
    c = logp.shape[1]
    b = np.zeros(c)
    base_acc = (logp.argmax(1) == y).mean()

    def cost(offsets):
        pred = (logp + offsets).argmax(1)
        if (pred == y).mean() < base_acc - max_drop:
            return np.inf
        return np.abs(_rates(pred, y, c) - target).mean()

    best = cost(b)
    for _ in range(SWEEPS):
        for k in range(c):
            for step in STEPS:
                trial = b.copy()
                trial[k] += step
                value = cost(trial)
                if value < best - 1e-12:
                    b, best = trial, value
    return b


@register
class GroupOffsets(PostProcessing):
    name, rank = "offsets", 21

    def fit_groups(self, cfg, logp, y, groups, order):
        target = _rates(logp.argmax(1), y, logp.shape[1])
        return {"offsets": {g: fit_offsets(logp[groups == g], y[groups == g], target, _budget(cfg)) for g in order}}

    def apply(self, logp, groups, fitted):
        b = np.stack([np.asarray(fitted["offsets"].get(g, np.zeros(logp.shape[1]))) for g in groups])
        return softmax(logp + b)

    def settings(self, cfg):
        return super().settings(cfg) | {"strength": _budget(cfg)}


def _budget(cfg) -> float:
    """The validation accuracy a group may lose: ``--strength``, else 0.02."""
    return 0.02 if cfg.strength is None else cfg.strength
