"""Linear and MLP heads on cached features, trained for every seed and sweep point at once.

The recipe is the paper's: AdamW, cosine annealing (per epoch, to 0), batch 64, 150 epochs,
learning rate and weight decay chosen on validation, and the epoch with the lowest validation
loss kept. All (seed, lr, wd) members train together as one batched model (``bmm`` over a
leading member axis), each with its own initialisation, shuffling and dropout generator, so a
member's numbers depend only on its own seed and settings. Features are standardised with the
training split's mean and standard deviation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from embedkit.heads.features import Split


@dataclass(frozen=True)
class HeadConfig:
    kind: str = "linear"                      # linear | mlp
    epochs: int = 150
    batch_size: int = 64
    lrs: tuple[float, ...] = (1e-3, 1e-2)
    weight_decays: tuple[float, ...] = (1e-4, 1e-2)
    hidden: int = 128                          # mlp only (cost grows linearly: docs/benchmarks.md)
    dropout: float = 0.2                       # mlp only
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


@dataclass
class TrainedHead:
    """The selected member for one seed: its settings, best epoch, and weights."""

    seed: int
    lr: float
    weight_decay: float
    best_epoch: int
    val_loss: float
    sweep: list[dict]                          # every (lr, wd) with its best validation loss and epoch
    params: list[torch.Tensor]
    mean: torch.Tensor
    std: torch.Tensor
    kind: str

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        z = ((x - self.mean) / self.std)[None]
        with torch.no_grad():
            return F.softmax(_forward(self.kind, [p[None] for p in self.params], z, None)[0], dim=-1)


def _forward(kind: str, params: list[torch.Tensor], x: torch.Tensor, dropout_masks: torch.Tensor | None) -> torch.Tensor:
    """(K, B, D) -> (K, B, C) for K members."""
    if kind == "linear":
        w, b = params
        return torch.baddbmm(b[:, None, :], x, w)
    w1, b1, w2, b2 = params
    h = F.relu(torch.baddbmm(b1[:, None, :], x, w1))
    if dropout_masks is not None:
        h = h * dropout_masks
    return torch.baddbmm(b2[:, None, :], h, w2)


def _init(kind: str, d: int, c: int, hidden: int, gens: list[torch.Generator]) -> list[torch.Tensor]:
    """nn.Linear's default init (uniform in ±1/sqrt(fan_in)), drawn from each member's generator."""
    def uniform(shape, fan_in):
        bound = 1 / math.sqrt(fan_in)
        return torch.stack([(torch.rand(shape, generator=g) * 2 - 1) * bound for g in gens])

    if kind == "linear":
        return [uniform((d, c), d), uniform((c,), d)]
    return [uniform((d, hidden), d), uniform((hidden,), d), uniform((hidden, c), hidden), uniform((c,), hidden)]


def train_heads(train: Split, val: Split, cfg: HeadConfig, seeds: list[int], n_classes: int) -> list[TrainedHead]:
    """Train every (seed, lr, wd) member; return the best member per seed (lowest validation loss)."""
    if cfg.kind not in ("linear", "mlp"):
        raise ValueError(f"unknown head {cfg.kind!r}")
    grid = [(lr, wd) for lr in cfg.lrs for wd in cfg.weight_decays]
    members = [(s, j) for s in seeds for j in range(len(grid))]
    k = len(members)
    gens = [torch.Generator().manual_seed(1_000_003 * s + j) for s, j in members]
    mean, std = train.x.mean(0), train.x.std(0).clamp_min(1e-6)
    xtr, xva = (train.x - mean) / std, (val.x - mean) / std
    n, d = xtr.shape
    params = [p.requires_grad_() for p in _init(cfg.kind, d, n_classes, cfg.hidden, gens)]
    lr0 = torch.tensor([grid[j][0] for _, j in members])
    wd = torch.tensor([grid[j][1] for _, j in members])
    state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    best_loss = torch.full((k,), float("inf"))
    best_epoch = torch.zeros(k, dtype=torch.long)
    best = [p.detach().clone() for p in params]
    step = 0
    b1, b2 = cfg.betas
    yva = val.y[None].expand(k, -1)
    for epoch in range(cfg.epochs):
        lr = lr0 * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
        perms = torch.stack([torch.randperm(n, generator=g) for g in gens])
        for start in range(0, n, cfg.batch_size):
            idx = perms[:, start:start + cfg.batch_size]
            masks = None
            if cfg.kind == "mlp" and cfg.dropout > 0:
                keep = 1 - cfg.dropout
                masks = torch.stack([(torch.rand(idx.shape[1], cfg.hidden, generator=g) < keep) for g in gens]) / keep
            logits = _forward(cfg.kind, params, xtr[idx], masks)
            loss = F.cross_entropy(logits.reshape(-1, n_classes), train.y[idx].reshape(-1), reduction="none")
            loss.view(k, -1).mean(1).sum().backward()
            step += 1
            with torch.no_grad():
                for p, (m, v) in zip(params, state):
                    shape = (k,) + (1,) * (p.dim() - 1)
                    p.mul_(1 - (lr * wd).view(shape))
                    m.mul_(b1).add_(p.grad, alpha=1 - b1)
                    v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                    denom = (v / (1 - b2 ** step)).sqrt_().add_(cfg.eps)
                    p.sub_(lr.view(shape) * (m / (1 - b1 ** step)) / denom)
                    p.grad = None
        with torch.no_grad():
            vl = F.cross_entropy(_forward(cfg.kind, params, xva[None].expand(k, -1, -1), None).reshape(-1, n_classes),
                                 yva.reshape(-1), reduction="none").view(k, -1).mean(1)
            better = vl < best_loss
            best_loss = torch.where(better, vl, best_loss)
            best_epoch = torch.where(better, torch.full_like(best_epoch, epoch + 1), best_epoch)
            for bp, p in zip(best, params):
                bp[better] = p.detach()[better]
    out = []
    for s in seeds:
        rows = [i for i, (ms, _) in enumerate(members) if ms == s]
        pick = min(rows, key=lambda i: (float(best_loss[i]), i))
        sweep = [{"lr": grid[members[i][1]][0], "weight_decay": grid[members[i][1]][1],
                  "val_loss": float(best_loss[i]), "best_epoch": int(best_epoch[i])} for i in rows]
        out.append(TrainedHead(seed=s, lr=grid[members[pick][1]][0], weight_decay=grid[members[pick][1]][1],
                               best_epoch=int(best_epoch[pick]), val_loss=float(best_loss[pick]), sweep=sweep,
                               params=[bp[pick].clone() for bp in best], mean=mean, std=std, kind=cfg.kind))
    return out
