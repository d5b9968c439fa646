"""Reweighting: each training image's loss weighted inverse to the frequency of its (group x class)
cell, so every cell weighs the same in the loss (Kamiran & Calders' reweighing, as MEDFAIR runs it)."""

from __future__ import annotations

from embedkit.heads.base import register
from embedkit.heads.mitigation import Mitigation, cells, inverse_frequency
from embedkit.heads.trained import Objective


class Weighted(Objective):
    def __init__(self, weights, members_per_seed: int):
        self.weights, self.g = weights, members_per_seed

    def loss(self, per_sample, logits, idx):
        w = self.weights[idx].repeat_interleave(self.g, dim=0)          # (S*G, B): each member its seed's rows
        return (per_sample * w).sum(-1) / w.sum(-1)


@register
class Reweight(Mitigation):
    name, rank = "reweight", 10

    def objective(self, cfg, cache, parts):
        head = cfg.head.resolved(self.head_kind(cfg))
        return Weighted(inverse_frequency(cells(cfg, cache, parts["train"])), len(head.lrs) * len(head.weight_decays))
