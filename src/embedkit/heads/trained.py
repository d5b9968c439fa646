"""Linear and MLP heads on cached features, every seed and sweep point trained at once.

The recipe is the paper's: AdamW, cosine annealing (per epoch, to 0), batch 64, 150 epochs,
learning rate and weight decay chosen on validation, and the epoch with the lowest validation
loss kept. All (seed, lr, wd) members train as one stacked model: each parameter kind is one
tensor over the members (the sweep points of a seed share its data order, so their first layers
are one GEMM), and AdamW updates each stacked tensor in one pass with per-member learning-rate
and weight-decay vectors. A member's initialisation and dropout come from a generator seeded by
its (seed, lr, wd), so it trains exactly as it would alone. Features are standardised with the
training split's mean and standard deviation.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, fields, replace

import torch
from torch.nn import functional as F

from embedkit.heads import lbfgs
from embedkit.heads.base import Fitted, Method
from embedkit.heads.checkpoint import resume as _resume, save as _save
from embedkit.heads.features import Split
from embedkit.spec import SWEEP


@dataclass(frozen=True)
class HeadConfig:
    kind: str = "linear"                      # linear | mlp
    epochs: int = SWEEP.epochs
    batch_size: int = SWEEP.batch_size
    lrs: tuple[float, ...] | None = None       # None: SWEEPS[kind]
    weight_decays: tuple[float, ...] | None = None
    hidden: int = 128                          # mlp only (cost grows linearly: docs/benchmarks.md)
    dropout: float = 0.2                       # mlp only
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    solver: str = "adamw"                      # adamw (the paper's) | lbfgs (CLIP's protocol, linear only: heads.lbfgs)

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
    params: list[torch.Tensor]                 # linear: W (D, C), b (C); mlp: W1 (D, H), b1 (H), W2 (H, C), b2 (C)
    mean: torch.Tensor
    std: torch.Tensor
    kind: str
    findings: bool = False                      # True: one sigmoid per finding (binary / multi-label tasks)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        z = ((x - self.mean) / self.std)[None]
        with torch.no_grad():
            return _forward(self.kind, [p[None] for p in self.params], z, None, 1)[0, 0]

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x)) if self.findings else F.softmax(self.logits(x), dim=-1)


def member_generator(seed: int, lr: float, weight_decay: float) -> torch.Generator:
    """A member's own generator (initialisation, dropout): the same in a sweep as alone."""
    digest = hashlib.sha256(f"{seed}|{lr!r}|{weight_decay!r}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:7], "little"))


def order_generator(seed: int) -> torch.Generator:
    """A seed's data order, shared by its sweep points."""
    return torch.Generator().manual_seed(1_000_003 * seed)


def _forward(kind: str, params: list[torch.Tensor], x: torch.Tensor, dropout_masks: torch.Tensor | None,
             groups: int) -> torch.Tensor:
    """(S, B, D) -> (S, G, B, C): S seeds (each with its own batch) x G sweep points."""
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
        return (torch.rand(shape, generator=g) * 2 - 1) * bound

    if kind == "linear":
        return [uniform((d, c), d), uniform((c,), d)]
    return [uniform((d, hidden), d), uniform((hidden,), d), uniform((hidden, c), hidden), uniform((c,), hidden)]


def _member_view(kind: str, k: int, t: torch.Tensor, s: int, g: int) -> torch.Tensor:
    """Stacked tensor ``t`` of parameter kind ``k`` viewed as (S, G, ...): member (seed i, sweep j) at [i, j]."""
    if kind == "linear" or k < 2:   # first layer: (S, D, G*K) and (S, G*K), members along the last axis
        return t.view(s, t.shape[1], g, -1).transpose(1, 2) if t.dim() == 3 else t.view(s, g, -1)
    return t.view(s, g, *t.shape[1:])   # second layer: (S*G, ...)


def _member_views(kind: str, params: list[torch.Tensor], s: int, g: int) -> list[torch.Tensor]:
    return [_member_view(kind, k, p, s, g) for k, p in enumerate(params)]


def _stack(kind: str, members: list[list[torch.Tensor]], s: int, g: int) -> list[torch.Tensor]:
    """Members' weights (seed-major) as the stacked leaves ``_forward`` takes."""
    rows = [members[i * g:(i + 1) * g] for i in range(s)]
    first = [torch.stack([torch.cat([m[k] for m in row], -1) for row in rows]) for k in (0, 1)]
    rest = [] if kind == "linear" else [torch.stack([m[k] for m in members]) for k in (2, 3)]
    return [t.contiguous().requires_grad_() for t in first + rest]


def _unstack(kind: str, params: list[torch.Tensor], s: int, g: int, i: int, j: int) -> list[torch.Tensor]:
    return [v[i, j].detach().clone() for v in _member_views(kind, params, s, g)]


def _spread(kind: str, k: int, values: torch.Tensor, p: torch.Tensor, s: int, g: int) -> torch.Tensor:
    """Per-member ``values`` (S, G) laid out to broadcast over stacked parameter ``p`` of kind ``k`` (the
    layout of ``_member_view``, kept broadcastable: a full-size copy slows the MLP's update by a quarter)."""
    if kind == "linear" or k < 2:       # (S, D, G*K) or (S, G*K): each member's K columns in a row
        per = values.repeat_interleave(p.shape[-1] // g, dim=1)
        return per[:, None, :] if p.dim() == 3 else per
    return values.reshape(s * g, *([1] * (p.dim() - 1)))


class StackedAdamW:
    """AdamW (decoupled weight decay, bias-corrected) over stacked tensors whose members have their own
    learning rate and weight decay. torch's fused Adam, run at lr 1 without decay on a zeroed twin of
    each tensor, gives every element's Adam direction in one pass; the member's lr and decay then
    apply as two broadcast passes: p ← p·(1 − lr·wd) + lr·direction, AdamW's update exactly."""

    def __init__(self, kind: str, params: list[torch.Tensor], lr: torch.Tensor, weight_decay: torch.Tensor,
                 s: int, g: int, betas=(0.9, 0.999), eps=1e-8):
        self.params = params
        self.lr = [_spread(kind, k, lr, p, s, g) for k, p in enumerate(params)]      # per-member, broadcastable
        self.lr_wd = [_spread(kind, k, lr * weight_decay, p, s, g) for k, p in enumerate(params)]
        self.direction = [torch.zeros_like(p, requires_grad=True) for p in params]
        self.adam = torch.optim.Adam(self.direction, lr=1.0, betas=betas, eps=eps, weight_decay=0.0, fused=True)
        self.lr_factor = 1.0

    @torch.no_grad()
    def step(self) -> None:
        for p, d in zip(self.params, self.direction):
            d.zero_()
            d.grad = p.grad
        self.adam.step()
        for p, d, lr, lr_wd in zip(self.params, self.direction, self.lr, self.lr_wd):
            p.mul_(1 - self.lr_factor * lr_wd).addcmul_(d, lr, value=self.lr_factor)

    def cosine(self, epoch: int, total: int) -> None:
        """Cosine annealing to 0 over ``total`` epochs (torch's CosineAnnealingLR, closed form)."""
        self.lr_factor = (1 + math.cos(math.pi * epoch / total)) / 2

    def state(self) -> dict:
        return {"adam": self.adam.state_dict(), "factor": self.lr_factor}

    def load(self, state: dict) -> None:
        self.adam.load_state_dict(state["adam"])
        self.lr_factor = float(state["factor"])


class Objective:
    """What each member minimises, and in which order it sees the rows. The default is ERM: the mean
    cross-entropy over a random permutation each epoch; interventions override (sample weights,
    resampling, group DRO, an adversary)."""

    resumable = True                               # False: state outside the trainer (no checkpoint)

    def order(self, generator: torch.Generator, n: int) -> torch.Tensor:
        return torch.randperm(n, generator=generator)

    def loss(self, per_sample: torch.Tensor, logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """(S*G,) member losses from per-sample losses (S*G, B) and logits (S, G, B, C) of rows ``idx`` (S, B)."""
        return per_sample.mean(-1)

    def after_step(self) -> None:
        """Update any state of the objective's own (e.g. an adversary's optimiser) after the members' step."""


CHECKPOINT_EVERY = 10  # epochs between checkpoints: a kill loses at most this much of the call in flight


def train_heads(train: Split, val: Split, cfg: HeadConfig, seeds: list[int], n_classes: int, *,
                checkpoint=None, objective: Objective | None = None) -> list[TrainedHead]:
    """Train every (seed, lr, wd) member; return the best member per seed (lowest validation loss)."""
    sweeps = train_sweep(train, val, cfg, seeds, n_classes, checkpoint=checkpoint, objective=objective)
    return [min(members, key=lambda h: h.val_loss) for members in sweeps]


def train_sweep(train: Split, val: Split, cfg: HeadConfig, seeds: list[int], n_classes: int, *,
                checkpoint=None, objective: Objective | None = None, criterion=None) -> list[list[TrainedHead]]:
    """Train every (seed, lr, wd) member; per seed, every sweep point at its best epoch (lowest
    validation loss, or lowest ``criterion`` of the validation probabilities (S*G, N, C) -> (S*G,) when
    given), in sweep order, so a selection strategy can choose among them.

    With ``checkpoint`` (a path owned by the caller, one per identity) the state is saved every
    CHECKPOINT_EVERY epochs and a rerun continues from it, ending bitwise equal to an uninterrupted run.
    """
    if cfg.kind not in ("linear", "mlp"):
        raise ValueError(f"unknown head {cfg.kind!r}")
    lbfgs.check(cfg.solver, cfg.kind, objective is not None and type(objective) is not Objective)
    if cfg.solver == "lbfgs":
        return lbfgs_sweep(train, val, seeds, n_classes)
    cfg = cfg.resolved()
    grid = [(lr, wd) for lr in cfg.lrs for wd in cfg.weight_decays]
    S, G = len(seeds), len(grid)
    order_gens = [order_generator(s) for s in seeds]
    gens = [member_generator(s, lr, wd) for s in seeds for lr, wd in grid]
    mean, std = train.x.mean(0), train.x.std(0).clamp_min(1e-6)
    xtr, xva = (train.x - mean) / std, (val.x - mean) / std
    n, d = xtr.shape
    params = _stack(cfg.kind, [_init(cfg.kind, d, n_classes, cfg.hidden, g) for g in gens], S, G)
    lr = torch.tensor([lr for lr, _ in grid]).repeat(S, 1)
    wd = torch.tensor([wd for _, wd in grid]).repeat(S, 1)
    opt = StackedAdamW(cfg.kind, params, lr, wd, S, G, cfg.betas, cfg.eps)
    best_loss, best_epoch = torch.full((S, G), float("inf")), torch.zeros((S, G), dtype=torch.long)
    best_score = torch.full((S, G), float("inf"))
    best = [p.detach().clone() for p in params]
    objective = objective or Objective()
    checkpoint = checkpoint if objective.resumable else None
    state = {"params": params, "opt": opt, "best_loss": best_loss, "best_epoch": best_epoch, "best": best,
             "best_score": best_score, "gens": order_gens + gens}
    first = _resume(checkpoint, state)

    findings = train.y.dim() == 2               # binary / multi-label targets (N, F), NaN where masked

    def per_sample(x: torch.Tensor, y: torch.Tensor, masks) -> tuple[torch.Tensor, torch.Tensor]:
        """(S*G, B) loss of every member on its seed's rows — cross-entropy, or for findings the binary
        cross-entropy averaged over the row's labelled findings — and the logits (S, G, B, C)."""
        logits = _forward(cfg.kind, params, x, masks, G)
        if findings:
            return masked_bce(logits, y[:, None].expand(-1, G, -1, -1)).view(S * G, -1), logits
        target = y[:, None, :].expand(-1, G, -1)
        ce = F.cross_entropy(logits.reshape(-1, n_classes), target.reshape(-1), reduction="none").view(S * G, -1)
        return ce, logits

    for epoch in range(first, cfg.epochs):
        opt.cosine(epoch, cfg.epochs)
        perms = torch.stack([objective.order(g, n) for g in order_gens])
        for start in range(0, perms.shape[1], cfg.batch_size):
            idx = perms[:, start:start + cfg.batch_size]
            masks = None
            if cfg.kind == "mlp" and cfg.dropout > 0:
                keep = 1 - cfg.dropout
                masks = torch.stack([torch.rand(idx.shape[1], cfg.hidden, generator=g) < keep for g in gens]) / keep
            for p in params:
                p.grad = None
            ce, logits = per_sample(xtr[idx], train.y[idx], masks)
            objective.loss(ce, logits, idx).sum().backward()
            opt.step()
            objective.after_step()
        with torch.no_grad():
            ce, logits = per_sample(xva[None].expand(S, -1, -1), val.y[None].expand(S, *val.y.shape), None)
            vl = ce.mean(-1).view(S, G)
        proba = (lambda z: torch.sigmoid(z)) if findings else (lambda z: F.softmax(z, -1))  # noqa: E731
        score = vl if criterion is None else torch.as_tensor(
            criterion(proba(logits).reshape(S * G, -1, n_classes).numpy()), dtype=vl.dtype).view(S, G)
        improved = score < best_score
        best_score.copy_(torch.where(improved, score, best_score))
        best_loss.copy_(torch.where(improved, vl, best_loss))
        best_epoch.masked_fill_(improved, epoch + 1)
        with torch.no_grad():
            for b, p in zip(_member_views(cfg.kind, best, S, G), _member_views(cfg.kind, params, S, G)):
                mask = improved.view(S, G, *([1] * (b.dim() - 2)))
                b.copy_(torch.where(mask, p, b))
        if checkpoint is not None and (epoch + 1) % CHECKPOINT_EVERY == 0 and epoch + 1 < cfg.epochs:
            _save(checkpoint, state, epoch + 1)
    return [[replace(_member(cfg, grid, s, i, j, best, best_loss, best_epoch, mean, std, S, G), findings=findings)
             for j in range(G)] for i, s in enumerate(seeds)]


def lbfgs_sweep(train: Split, val: Split, seeds: list[int], n_classes: int) -> list[list[TrainedHead]]:
    """CLIP's protocol (``heads.lbfgs``): every L2 strength as a sweep point, recorded like AdamW's (lr 0,
    weight_decay = l2, best_epoch = iterations). Convex from zero: one fit serves every seed."""
    findings = train.y.dim() == 2
    mean, std = train.x.mean(0), train.x.std(0).clamp_min(1e-6)

    def loss(logits, y):
        return masked_bce(logits, y).mean() if findings else F.cross_entropy(logits, y)

    fits = lbfgs.sweep((train.x - mean) / std, train.y, (val.x - mean) / std, val.y, n_classes, loss)
    record = [{"lr": 0.0, "weight_decay": f.l2, "val_loss": f.val_loss, "best_epoch": f.iterations} for f in fits]
    return [[TrainedHead(seed=s, lr=0.0, weight_decay=f.l2, best_epoch=f.iterations, val_loss=f.val_loss, sweep=record,
                         params=[f.weight, f.bias], mean=mean, std=std, kind="linear", findings=findings) for f in fits]
            for s in seeds]


def masked_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(..., B) binary cross-entropy per row, averaged over its labelled (non-NaN) findings."""
    labelled = ~torch.isnan(target)
    bce = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(target), reduction="none") * labelled
    return bce.sum(-1) / labelled.sum(-1).clamp_min(1)


def _member(cfg, grid, seed, i, j, best, best_loss, best_epoch, mean, std, S, G) -> TrainedHead:
    """Seed ``i``'s sweep point ``j`` at its best epoch; ``sweep`` lists every point of the seed."""
    sweep = [{"lr": grid[k][0], "weight_decay": grid[k][1], "val_loss": float(best_loss[i, k]),
              "best_epoch": int(best_epoch[i, k])} for k in range(G)]
    return TrainedHead(seed=seed, lr=grid[j][0], weight_decay=grid[j][1], best_epoch=int(best_epoch[i, j]),
                       val_loss=float(best_loss[i, j]), sweep=sweep, params=_unstack(cfg.kind, best, S, G, i, j),
                       mean=mean, std=std, kind=cfg.kind)


class TrainedMethod(Method):
    """The linear and MLP heads (``kind``): the sweep of every seed trained at once, each sweep point at
    its lowest-validation-loss epoch, one point chosen on validation by ``cfg.selection``."""

    kind: str = "linear"
    epoch_by_strategy = False      # True: each member's epoch is chosen by the selection strategy's criterion

    def head_kind(self, cfg) -> str:
        return self.kind

    @classmethod
    def options(cls):
        """The head's recipe (``HeadConfig``) as study settings: epochs, batch size, sweeps, MLP width and dropout."""
        import typing

        hints = typing.get_type_hints(HeadConfig)
        return {f.name: (hints[f.name], f.default) for f in fields(HeadConfig) if f.name not in ("kind", "betas", "eps")}

    def settings(self, cfg) -> dict:
        head = asdict(cfg.head.resolved(self.head_kind(cfg)))
        if head["solver"] == "adamw":            # the default: identities as before the option existed
            del head["solver"]
        return {"head": head, "selection": cfg.selection}

    def objective(self, cfg, cache, parts, seeds) -> Objective:
        return Objective()

    def fit(self, cfg, cache, parts, seeds):
        from embedkit.heads import selection

        kind = self.head_kind(cfg)
        checkpoint = cfg.run_dir(seeds[0]).parent / f".training-{cfg.config_hash}-{'-'.join(map(str, seeds))}.pt"
        criterion = None
        if self.epoch_by_strategy:
            from embedkit.heads.groups import attribute_labels

            _, groups, order = attribute_labels(cfg, cache, parts["val"].rows)
            criterion = selection.epoch_criterion(selection.check(cfg.selection), parts["val"].y.numpy(), groups, order)
        sweeps = train_sweep(parts["train"], parts["val"], cfg.head.resolved(kind), list(seeds), len(cache.classes),
                             checkpoint=checkpoint, objective=self.objective(cfg, cache, parts, seeds),
                             criterion=criterion)
        for members in sweeps:
            val = [h.predict_proba(parts["val"].x).numpy() for h in members]
            pick, record = selection.choose(cfg, cache, parts["val"], members, val)
            h = members[pick]
            yield Fitted(h.seed, {"val": val[pick], "test": h.predict_proba(parts["test"].x).numpy()},
                         {"lr": h.lr, "weight_decay": h.weight_decay, "best_epoch": h.best_epoch, "val_loss": h.val_loss,
                          "sweep": h.sweep, **record})
        checkpoint.unlink(missing_ok=True)
