"""Group DRO (Sagawa et al. 2020, Algorithm 1) over (group x class) cells: each member keeps weights q
over the cells, raised after every batch by exp(eta x the cell's batch loss) and renormalised, and
minimises the q-weighted sum of the cells' batch losses, so the worst cells dominate. eta = 0.01 (the
paper's step size) unless --strength sets it."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from embedkit.heads.base import register
from embedkit.heads.groups import cells
from embedkit.heads.mitigation import Mitigation
from embedkit.heads.trained import Objective


class GroupDRO(Objective):
    resumable = False          # q lives here, outside the trainer's checkpoint

    def __init__(self, codes: torch.Tensor, members_per_seed: int, eta: float):
        self.codes, self.g, self.eta = codes, members_per_seed, eta
        self.k = int(codes.max()) + 1
        self.q = None

    def loss(self, per_sample, logits, idx):
        onehot = F.one_hot(self.codes[idx], self.k).float().repeat_interleave(self.g, dim=0)   # (S*G, B, K)
        counts = onehot.sum(1)
        cell_loss = torch.einsum("mb,mbk->mk", per_sample, onehot) / counts.clamp_min(1)
        if self.q is None:
            self.q = torch.full_like(cell_loss, 1.0 / self.k)
        with torch.no_grad():
            self.q = self.q * torch.exp(self.eta * cell_loss.detach() * (counts > 0))
            self.q = self.q / self.q.sum(-1, keepdim=True)
        return (self.q * cell_loss).sum(-1)


@register
class GroupDRORegistered(Mitigation):
    name, rank, strength_default = "groupdro", 12, 0.01
    epoch_by_strategy = True

    def objective(self, cfg, cache, parts, seeds):
        head = cfg.head.resolved(self.head_kind(cfg))
        codes = torch.from_numpy(cells(cfg, cache, parts["train"]))
        return GroupDRO(codes, len(head.lrs) * len(head.weight_decays), self.strength(cfg))
