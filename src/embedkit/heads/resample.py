"""Resampling: each epoch draws the training rows with replacement, each with probability inverse to
its (group x class) cell's frequency, so every cell is seen equally often (group-balanced sampling)."""

from __future__ import annotations

import torch

from embedkit.heads.base import register
from embedkit.heads.groups import cells
from embedkit.heads.mitigation import Mitigation, inverse_frequency
from embedkit.heads.trained import Objective


class Resampled(Objective):
    def __init__(self, weights: torch.Tensor):
        self.p = weights / weights.sum()

    def order(self, generator, n):
        return torch.multinomial(self.p, n, replacement=True, generator=generator)


@register
class Resample(Mitigation):
    name, rank = "resample", 11

    def objective(self, cfg, cache, parts, seeds):
        return Resampled(inverse_frequency(cells(cfg, cache, parts["train"])))
