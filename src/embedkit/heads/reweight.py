"""Reweighting (Kamiran & Calders 2012, "Data preprocessing techniques for classification without
discrimination", as MEDFAIR runs it): each training image's loss weighted by P(A) P(Y) / P(A, Y) of its
(group, class) cell, so that group and class are independent in the weighted training set. On a
balanced table this is every cell weighing the same."""

from __future__ import annotations

from embedkit.heads.base import register
from embedkit.heads.groups import group_codes, label_codes
from embedkit.heads.mitigation import Mitigation, kamiran_calders
from embedkit.heads.trained import Objective


class Weighted(Objective):
    def __init__(self, weights, members_per_seed: int):
        self.weights, self.g = weights, members_per_seed

    def row_weights(self, idx):
        return self.weights[idx].repeat_interleave(self.g, dim=0)      # (S*G, B): each member its seed's rows

    def loss(self, per_sample, logits, idx):
        w = self.row_weights(idx)
        return (per_sample * w).sum(-1) / w.sum(-1)

    def gradient(self, per_sample, logits, idx):
        w = self.row_weights(idx)
        return w / w.sum(-1, keepdim=True), None


@register
class Reweight(Mitigation):
    name, rank = "reweight", 10

    def objective(self, cfg, cache, parts, seeds):
        head = cfg.head.resolved(self.head_kind(cfg))
        train = parts["train"]
        weights = kamiran_calders(group_codes(cfg, cache, train), label_codes(train)[0])
        return Weighted(weights, len(head.lrs) * len(head.weight_decays))
