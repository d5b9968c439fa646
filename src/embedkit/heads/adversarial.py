"""Adversarial debiasing (Zhang et al. 2018, the equalised-odds form): an adversary predicts the
attribute from the head's class probabilities and the true class; a gradient-reversal layer (Ganin &
Lempitsky 2015) passes its gradient to the head negated and scaled by lambda (1.0 unless --strength),
so the head learns probabilities that carry no group information beyond the class."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from embedkit.heads.base import register
from embedkit.heads.groups import attribute_labels
from embedkit.heads.mitigation import Mitigation
from embedkit.heads.trained import Objective


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.scale * grad, None


class Adversary(Objective):
    """One linear adversary per member (stacked like the heads), trained with Adam at lr 1e-3."""

    resumable = False

    def __init__(self, y: torch.Tensor, group: torch.Tensor, n_groups: int, g: int, scale: float, seeds: list[int]):
        self.y, self.group, self.k, self.g, self.scale, self.seeds = y, group, n_groups, g, scale, list(seeds)
        self.w = None

    def _build(self, members: int, n_classes: int) -> None:
        """The adversaries' weights (nn.Linear's init), once the number of members is known: each member's from
        its own seed and sweep point, so a seed rerun alone trains the same adversary."""
        bound = 1 / (2 * n_classes) ** 0.5
        w = [torch.rand(2 * n_classes, self.k, generator=torch.Generator().manual_seed(1_000_033 * seed + j))
             for seed in self.seeds for j in range(self.g)]
        self.w = ((torch.stack(w) * 2 - 1) * bound).requires_grad_()
        self.b = torch.zeros(members, self.k, requires_grad=True)
        self.opt = torch.optim.Adam([self.w, self.b], lr=1e-3)

    def loss(self, per_sample, logits, idx):
        s, g, b, c = logits.shape
        if self.w is None:
            self._build(s * g, c)
        p = _Reverse.apply(F.softmax(logits, -1), self.scale).reshape(s * g, b, c)
        y = F.one_hot(self.y[idx], c).float().repeat_interleave(self.g, dim=0)
        z = torch.baddbmm(self.b[:, None, :], torch.cat([p, y], -1), self.w)
        target = self.group[idx].repeat_interleave(self.g, dim=0)
        adv = F.cross_entropy(z.reshape(-1, self.k), target.reshape(-1), reduction="none").view(s * g, b).mean(-1)
        return per_sample.mean(-1) + adv

    def after_step(self):
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


@register
class Adversarial(Mitigation):
    name, rank, strength_default = "adversarial", 13, 1.0
    epoch_by_strategy = True

    def objective(self, cfg, cache, parts, seeds):
        head = cfg.head.resolved(self.head_kind(cfg))
        _, labels, order = attribute_labels(cfg, cache, parts["train"].rows)
        group = torch.tensor([order.index(v) if v in order else len(order) for v in labels])
        return Adversary(parts["train"].y, group, len(order) + 1, len(head.lrs) * len(head.weight_decays),
                         self.strength(cfg), seeds=seeds)
