"""Per-group temperature scaling (Guo et al. 2017, fitted per group): each group of the attribute gets
the temperature T minimising its validation negative log-likelihood; test probabilities are
softmax(log p / T_group). It changes calibration (the ECE gap), never the argmax."""

from __future__ import annotations

import numpy as np

from embedkit.heads.base import register
from embedkit.heads.posthoc import PostProcessing, softmax

GRID = np.exp(np.linspace(np.log(0.05), np.log(20.0), 241))


def fit_temperature(logp: np.ndarray, y: np.ndarray) -> float:
    """The grid temperature with the lowest NLL of ``y`` under softmax(logp / T)."""
    if len(y) == 0:
        return 1.0
    nll = [-np.log(np.clip(softmax(logp / t)[np.arange(len(y)), y], 1e-12, 1)).mean() for t in GRID]
    return float(GRID[int(np.argmin(nll))])


@register
class GroupTemperature(PostProcessing):
    name, rank = "temperature", 20

    def fit_groups(self, cfg, logp, y, groups, order):
        return {"temperature": {g: fit_temperature(logp[groups == g], y[groups == g]) for g in order}}

    def apply(self, logp, groups, fitted):
        t = np.array([fitted["temperature"].get(g, 1.0) for g in groups])
        return softmax(logp / t[:, None])
