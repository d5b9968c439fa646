"""Linear and MLP heads on cached features, every seed and sweep point trained at once.

The recipe is the paper's: AdamW, cosine annealing (per epoch, to 0), batch 64, 150 epochs,
learning rate and weight decay chosen on validation, and the epoch with the lowest validation
loss kept. All (seed, lr, wd) members train as one stacked model (``heads.stacked``: one tensor per
parameter kind, gradients written out, torch's fused AdamW per sweep point). A member's initialisation
and dropout come from a generator seeded by its (seed, lr, wd), so it trains exactly as it would alone
(tests/heads/test_trained.py checks it against torch.optim.AdamW). Features are standardised with the
training split's mean and standard deviation.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields, replace

import torch
from torch.nn import functional as F

from embedkit.attributes import ACTED_ON
from embedkit.heads import lbfgs, stacked
from embedkit.heads.base import Fitted, Method
from embedkit.heads.checkpoint import resume as _resume, save as _save
from embedkit.heads.features import Split
from embedkit.spec import SWEEP, Count, Decay, Fraction, Rate, check_bounds


@dataclass(frozen=True)
class HeadConfig:
    kind: str = "linear"                      # linear | mlp
    epochs: Count = SWEEP.epochs
    batch_size: Count = SWEEP.batch_size
    lrs: tuple[Rate, ...] | None = None        # None: SWEEPS[kind]
    weight_decays: tuple[Decay, ...] | None = None
    hidden: Count = 128                        # mlp only (cost grows linearly: docs/benchmarks.md)
    dropout: Fraction = 0.2                    # mlp only
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    solver: str = "adamw"                      # adamw (the paper's) | lbfgs (CLIP's protocol, linear only: heads.lbfgs)

    def __post_init__(self):
        check_bounds(self)

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
            return stacked.forward(self.kind, [p[None, None] for p in self.params], z, None)[0][0, 0]

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x)) if self.findings else F.softmax(self.logits(x), dim=-1)


def member_generator(seed: int, lr: float, weight_decay: float) -> torch.Generator:
    """A member's own generator (initialisation, dropout): the same in a sweep as alone."""
    digest = hashlib.sha256(f"{seed}|{lr!r}|{weight_decay!r}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:7], "little"))


def order_generator(seed: int) -> torch.Generator:
    """A seed's data order, shared by its sweep points."""
    return torch.Generator().manual_seed(1_000_003 * seed)


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

    def gradient(self, per_sample: torch.Tensor, logits: torch.Tensor,
                 idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The gradient of the summed member losses with respect to the per-sample losses (S*G, B) and, where
        ``loss`` reads the logits themselves, to the logits (else None): autograd over ``loss``, and for the
        mean (ERM) every row's 1/B without it."""
        if type(self).loss is Objective.loss:
            return torch.full_like(per_sample, 1 / per_sample.shape[-1]), None
        with torch.enable_grad():
            rows, z = per_sample.detach().requires_grad_(), logits.detach().requires_grad_()
            self.loss(rows, z, idx).sum().backward()
        return rows.grad, z.grad

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
    xtr, xva = (train.x - mean).div_(std), (val.x - mean).div_(std)      # one standardised copy each, no temporary
    n, d = xtr.shape
    params = stacked.stack([stacked.init(cfg.kind, d, n_classes, cfg.hidden, g) for g in gens], S, G)
    opt = stacked.StackedAdamW(params, [lr for lr, _ in grid], [wd for _, wd in grid], cfg.betas, cfg.eps)
    best_loss, best_epoch = torch.full((S, G), float("inf")), torch.zeros((S, G), dtype=torch.long)
    best_score = torch.full((S, G), float("inf"))
    best = [p.clone() for p in params]
    objective = objective or Objective()
    checkpoint = checkpoint if objective.resumable else None
    state = {"params": params, "opt": opt, "best_loss": best_loss, "best_epoch": best_epoch, "best": best,
             "best_score": best_score, "gens": order_gens + gens}
    first = _resume(checkpoint, state)
    targets, val_targets = Targets(train.y, n_classes), Targets(val.y, n_classes)
    val_rows = torch.arange(len(xva)).expand(S, -1)
    proba = torch.sigmoid if targets.findings else (lambda z: F.softmax(z, -1))  # noqa: E731

    for epoch in range(first, cfg.epochs):
        opt.cosine(epoch, cfg.epochs)
        _epoch(cfg, params, opt, xtr, targets, objective, torch.stack([objective.order(g, n) for g in order_gens]),
               gens)
        logits, _ = stacked.forward(cfg.kind, params, xva[None].expand(S, -1, -1), None)
        vl = val_targets(logits, val_rows)[0].mean(-1).view(S, G)
        score = vl if criterion is None else torch.as_tensor(
            criterion(proba(logits).reshape(S * G, -1, n_classes).numpy()), dtype=vl.dtype).view(S, G)
        improved = score < best_score
        best_score.copy_(torch.where(improved, score, best_score))
        best_loss.copy_(torch.where(improved, vl, best_loss))
        best_epoch.masked_fill_(improved, epoch + 1)
        for b, p in zip(stacked.member_views(best), stacked.member_views(params)):
            b.copy_(torch.where(improved.view(S, G, *([1] * (b.dim() - 2))), p, b))
        if checkpoint is not None and (epoch + 1) % CHECKPOINT_EVERY == 0 and epoch + 1 < cfg.epochs:
            _save(checkpoint, state, epoch + 1)
    return [[replace(_member(cfg, grid, s, i, j, best, best_loss, best_epoch, mean, std, S, G), findings=targets.findings)
             for j in range(G)] for i, s in enumerate(seeds)]


def _epoch(cfg: HeadConfig, params, opt, x: torch.Tensor, targets: "Targets", objective: Objective,
           perms: torch.Tensor, gens: list[torch.Generator]) -> None:
    """One pass over ``perms`` (S, N): each seed's rows in its order, every member a step per batch."""
    s, groups = perms.shape[0], len(gens) // perms.shape[0]
    keep = 1 - cfg.dropout
    drawn = None
    if cfg.kind == "mlp" and cfg.dropout > 0:     # each member's masks for the epoch from its own generator
        drawn = torch.stack([torch.rand(perms.shape[1], cfg.hidden, generator=g) < keep for g in gens])
        drawn = drawn.view(s, groups, *drawn.shape[1:]).transpose(0, 1)         # (G, S, N, H) like the weights
    for start in range(0, perms.shape[1], cfg.batch_size):
        idx = perms[:, start:start + cfg.batch_size]
        dropout = None if drawn is None else (drawn[:, :, start:start + cfg.batch_size] / keep).contiguous()
        xb = rows(x, idx)
        logits, hidden = stacked.forward(cfg.kind, params, xb, dropout)
        per_sample, dlogits = targets(logits, idx)
        weight, direct = objective.gradient(per_sample, logits, idx)
        dlogits.mul_(weight.view(s, groups, -1, 1))
        if direct is not None:
            dlogits.add_(direct)
        stacked.backward(cfg.kind, params, xb, hidden, dropout, dlogits, opt.grads)
        opt.step()
        objective.after_step()


def rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``t[idx]`` for an (S, B) index by index_select: row copies, several times faster than advanced indexing."""
    return t.index_select(0, idx.reshape(-1)).view(*idx.shape, *t.shape[1:])


class Targets:
    """A split's labels as each row's loss and its gradient: cross-entropy over classes, or for findings
    (N, F) the binary cross-entropy averaged over the row's labelled findings (NaN: unlabelled)."""

    def __init__(self, y: torch.Tensor, n_classes: int):
        self.findings, self.y = y.dim() == 2, y
        if self.findings:
            labelled = ~torch.isnan(y)
            self.target = torch.nan_to_num(y)
            self.weight = labelled / labelled.sum(-1, keepdim=True).clamp_min(1)   # d(row loss)/d(bce) per finding
        else:
            self.target = F.one_hot(y, n_classes).float()

    def __call__(self, logits: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row losses (S*G, B) of logits (S, G, B, C) for rows ``idx`` (S, B), and their gradient."""
        s, g, b, _ = logits.shape
        t = rows(self.target, idx)[:, None]
        if self.findings:
            loss = masked_bce(logits, rows(self.y, idx)[:, None].expand_as(logits))
            return loss.reshape(s * g, b), (torch.sigmoid(logits) - t) * rows(self.weight, idx)[:, None]
        log_p = F.log_softmax(logits, -1)
        return -(log_p * t).sum(-1).reshape(s * g, b), log_p.exp() - t


def lbfgs_sweep(train: Split, val: Split, seeds: list[int], n_classes: int) -> list[list[TrainedHead]]:
    """CLIP's protocol (``heads.lbfgs``): every L2 strength as a sweep point, recorded like AdamW's (lr 0,
    weight_decay = l2, best_epoch = iterations). Convex from zero: one fit serves every seed."""
    findings = train.y.dim() == 2
    mean, std = train.x.mean(0), train.x.std(0).clamp_min(1e-6)

    def loss(logits, y):
        return masked_bce(logits, y).mean() if findings else F.cross_entropy(logits, y)

    fits = lbfgs.sweep(train.x, train.y, val.x, val.y, n_classes, loss, mean=mean, std=std)
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
                       val_loss=float(best_loss[i, j]), sweep=sweep, params=stacked.unstack(best, i, j),
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

        hints = typing.get_type_hints(HeadConfig, include_extras=True)     # with their bounds
        return {f.name: (hints[f.name], f.default) for f in fields(HeadConfig) if f.name not in ("kind", "betas", "eps")}

    def settings(self, cfg) -> dict:
        head = asdict(cfg.head.resolved(self.head_kind(cfg)))
        if head["solver"] == "adamw":            # the default: identities as before the option existed
            del head["solver"]
        chosen_by = {} if cfg.selection == "loss" else {"attribute": cfg.attribute or ACTED_ON}   # its groups choose
        return {"head": head, "selection": cfg.selection, **chosen_by}

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
