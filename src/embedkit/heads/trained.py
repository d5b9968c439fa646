"""Linear and MLP heads on cached features, trained for every seed and sweep point at once.

The recipe is the paper's: AdamW, cosine annealing (per epoch, to 0), batch 64, 150 epochs,
learning rate and weight decay chosen on validation, and the epoch with the lowest validation
loss kept. All (seed, lr, wd) members train together as one batched model: the sweep points of a
seed share its data order, so their first layers form one GEMM; each member has its own
initialisation and dropout generator and its own AdamW parameter group. Features are
standardised with the training split's mean and standard deviation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch.nn import functional as F

from embedkit.heads.features import Split


@dataclass(frozen=True)
class HeadConfig:
    kind: str = "linear"                      # linear | mlp
    epochs: int = 150
    batch_size: int = 64
    lrs: tuple[float, ...] | None = None       # None: SWEEPS[kind]
    weight_decays: tuple[float, ...] | None = None
    hidden: int = 128                          # mlp only (cost grows linearly: docs/benchmarks.md)
    dropout: float = 0.2                       # mlp only
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def resolved(self, kind: str | None = None) -> "HeadConfig":
        """This configuration for ``kind`` with the default sweeps filled in."""
        kind = kind or self.kind
        lrs, wds = SWEEPS[kind]
        return replace(self, kind=kind, lrs=self.lrs or lrs, weight_decays=self.weight_decays or wds)


# Default sweeps, chosen on validation. The MLP sweeps lr only (wd at AdamW's usual 1e-2): each
# sweep point costs a full training run, and the MLP dominates the grid's time (docs/benchmarks.md).
SWEEPS = {"linear": ((1e-3, 1e-2), (1e-4, 1e-2)), "mlp": ((1e-4, 1e-3), (1e-2,))}


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
            return F.softmax(_forward(self.kind, [p[None] for p in self.params], z, None, 1)[0, 0], dim=-1)


def _forward(kind: str, params: list[torch.Tensor], x: torch.Tensor, dropout_masks: torch.Tensor | None,
             groups: int) -> torch.Tensor:
    """(S, B, D) -> (S, G, B, C): S seeds (each with its own batch) x G sweep points.

    The G members of a seed see the same batch, so their first layers are one GEMM over the
    concatenated weights (S, D, G*H) — the bulk of the work — rather than G small ones.
    """
    s, b, _ = x.shape
    if kind == "linear":
        w, bias = params                                        # (S, D, G*C), (S, G*C)
        return torch.baddbmm(bias[:, None, :], x, w).view(s, b, groups, -1).transpose(1, 2)
    w1, b1, w2, b2 = params                                     # (S, D, G*H), (S, G*H), (S*G, H, C), (S*G, C)
    h = F.relu(torch.baddbmm(b1[:, None, :], x, w1))            # (S, B, G*H)
    h = h.view(s, b, groups, -1).transpose(1, 2).reshape(s * groups, b, -1)
    if dropout_masks is not None:
        h = h * dropout_masks
    return torch.baddbmm(b2[:, None, :], h, w2).view(s, groups, b, -1)


def _init(kind: str, d: int, c: int, hidden: int, g: torch.Generator) -> list[torch.Tensor]:
    """One member's weights with nn.Linear's default init (uniform in ±1/sqrt(fan_in))."""
    def uniform(shape, fan_in):
        bound = 1 / math.sqrt(fan_in)
        return ((torch.rand(shape, generator=g) * 2 - 1) * bound).requires_grad_()

    if kind == "linear":
        return [uniform((d, c), d), uniform((c,), d)]
    return [uniform((d, hidden), d), uniform((hidden,), d), uniform((hidden, c), hidden), uniform((c,), hidden)]


def _grouped(kind: str, members: list[list[torch.Tensor]], s: int, g: int) -> list[torch.Tensor]:
    """Members' weights (seed-major) laid out as ``_forward`` expects; differentiable."""
    rows = [members[i * g:(i + 1) * g] for i in range(s)]
    first = [torch.stack([torch.cat([m[k] for m in row], -1) for row in rows]) for k in (0, 1)]
    if kind == "linear":
        return first
    return first + [torch.stack([m[k] for m in members]) for k in (2, 3)]


CHECKPOINT_EVERY = 10  # epochs between checkpoints: a kill loses at most this much of the call in flight


def train_heads(train: Split, val: Split, cfg: HeadConfig, seeds: list[int], n_classes: int, *,
                checkpoint=None) -> list[TrainedHead]:
    """Train every (seed, lr, wd) member; return the best member per seed (lowest validation loss).

    A seed fixes a member's data order and, with its sweep index, its initialisation and dropout.
    Each member is its own AdamW parameter group (torch's optimiser and cosine schedule). With
    ``checkpoint`` (a path owned by the caller, one per identity) the state is saved every
    CHECKPOINT_EVERY epochs and a rerun continues from it, ending bitwise equal to an uninterrupted run.
    """
    if cfg.kind not in ("linear", "mlp"):
        raise ValueError(f"unknown head {cfg.kind!r}")
    cfg = cfg.resolved()
    grid = [(lr, wd) for lr in cfg.lrs for wd in cfg.weight_decays]
    S, G = len(seeds), len(grid)
    order_gens = [torch.Generator().manual_seed(1_000_003 * s) for s in seeds]
    gens = [torch.Generator().manual_seed(1_000_003 * s + 1 + j) for s in seeds for j in range(G)]
    mean, std = train.x.mean(0), train.x.std(0).clamp_min(1e-6)
    xtr, xva = (train.x - mean) / std, (val.x - mean) / std
    n, d = xtr.shape
    members = [_init(cfg.kind, d, n_classes, cfg.hidden, g) for g in gens]
    opt = torch.optim.AdamW([{"params": m, "lr": grid[i % G][0], "weight_decay": grid[i % G][1]}
                             for i, m in enumerate(members)], betas=cfg.betas, eps=cfg.eps, fused=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    best_loss = torch.full((S * G,), float("inf"))
    best_epoch = torch.zeros(S * G, dtype=torch.long)
    best = [[p.detach().clone() for p in m] for m in members]

    state = {"members": members, "opt": opt, "sched": sched, "best_loss": best_loss, "best_epoch": best_epoch,
             "best": best, "gens": order_gens + gens}
    first = _resume(checkpoint, state)

    def losses(x: torch.Tensor, y: torch.Tensor, masks) -> torch.Tensor:
        """(S*G,) mean cross-entropy of every member on its seed's batch."""
        logits = _forward(cfg.kind, _grouped(cfg.kind, members, S, G), x, masks, G)
        target = y[:, None, :].expand(-1, G, -1)
        return F.cross_entropy(logits.reshape(-1, n_classes), target.reshape(-1), reduction="none").view(S * G, -1).mean(-1)

    for epoch in range(first, cfg.epochs):
        perms = torch.stack([torch.randperm(n, generator=g) for g in order_gens])
        for start in range(0, n, cfg.batch_size):
            idx = perms[:, start:start + cfg.batch_size]
            masks = None
            if cfg.kind == "mlp" and cfg.dropout > 0:
                keep = 1 - cfg.dropout
                masks = torch.stack([torch.rand(idx.shape[1], cfg.hidden, generator=g) < keep for g in gens]) / keep
            opt.zero_grad(set_to_none=True)
            losses(xtr[idx], train.y[idx], masks).sum().backward()
            opt.step()
        sched.step()
        with torch.no_grad():
            vl = losses(xva[None].expand(S, -1, -1), val.y[None].expand(S, -1), None)
        for i in torch.nonzero(vl < best_loss).flatten().tolist():
            best_loss[i], best_epoch[i] = vl[i], epoch + 1
            best[i] = [p.detach().clone() for p in members[i]]
        if checkpoint is not None and (epoch + 1) % CHECKPOINT_EVERY == 0 and epoch + 1 < cfg.epochs:
            _save(checkpoint, state, epoch + 1)
    out = []
    for si, s in enumerate(seeds):
        pick = min(range(G), key=lambda j: (float(best_loss[si * G + j]), j))
        sweep = [{"lr": grid[j][0], "weight_decay": grid[j][1], "val_loss": float(best_loss[si * G + j]),
                  "best_epoch": int(best_epoch[si * G + j])} for j in range(G)]
        out.append(TrainedHead(seed=s, lr=grid[pick][0], weight_decay=grid[pick][1], best_epoch=int(best_epoch[si * G + pick]),
                               val_loss=float(best_loss[si * G + pick]), sweep=sweep, params=best[si * G + pick],
                               mean=mean, std=std, kind=cfg.kind))
    return out


def _save(path, state: dict, epoch: int) -> None:
    """Atomically write everything the next epoch depends on (weights, optimiser, schedule, best, RNG)."""
    import os
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save({"epoch": epoch, "members": [[p.detach() for p in m] for m in state["members"]],
                "opt": state["opt"].state_dict(), "sched": state["sched"].state_dict(),
                "best_loss": state["best_loss"], "best_epoch": state["best_epoch"], "best": state["best"],
                "gens": [g.get_state() for g in state["gens"]]}, tmp)
    os.replace(tmp, path)


def _resume(path, state: dict) -> int:
    """Load a checkpoint into ``state`` in place; returns the epoch to continue from (0: none)."""
    from pathlib import Path

    if path is None or not Path(path).is_file():
        return 0
    ck = torch.load(path, weights_only=True)
    with torch.no_grad():
        for m, saved in zip(state["members"], ck["members"]):
            for p, v in zip(m, saved):
                p.copy_(v)
    state["opt"].load_state_dict(ck["opt"])
    state["sched"].load_state_dict(ck["sched"])
    state["best_loss"].copy_(ck["best_loss"])
    state["best_epoch"].copy_(ck["best_epoch"])
    state["best"][:] = ck["best"]
    for g, s in zip(state["gens"], ck["gens"]):
        g.set_state(s)
    return int(ck["epoch"])
