"""The stacked network behind the linear and MLP heads: every (seed, sweep point) member of a sweep as one
tensor per parameter kind, its forward pass, its gradients written out, and AdamW with per-member settings.

Layout (G sweep points, S seeds): each parameter kind is one tensor (G, S, ...) — W (G, S, D, K), b (G, S, K)
— so a sweep point's members are contiguous and torch's fused AdamW kernel updates them in one pass with their
own learning rate and weight decay. A seed's sweep points share its batch: the linear layer runs as one GEMM
per seed over all its sweep points' columns (a narrow GEMM per member is several times slower), the MLP's
first layer as one batched GEMM per sweep point. The gradients are a few GEMMs and elementwise passes, written
out rather than recorded by autograd: at batch 64 autograd's graph and torch.optim's bookkeeping cost more
than the matmuls (docs/benchmarks.md).
"""

from __future__ import annotations

import math

import torch


def init(kind: str, d: int, c: int, hidden: int, g: torch.Generator) -> list[torch.Tensor]:
    """One member's weights with nn.Linear's default init (uniform in ±1/sqrt(fan_in))."""
    def uniform(shape, fan_in):
        bound = 1 / math.sqrt(fan_in)
        return (torch.rand(shape, generator=g) * 2 - 1) * bound

    if kind == "linear":
        return [uniform((d, c), d), uniform((c,), d)]
    return [uniform((d, hidden), d), uniform((hidden,), d), uniform((hidden, c), hidden), uniform((c,), hidden)]


def stack(members: list[list[torch.Tensor]], s: int, g: int) -> list[torch.Tensor]:
    """Members' weights (seed-major: seed i's sweep point j at i*G + j) as the stacked (G, S, ...) tensors."""
    return [torch.stack([m[k] for m in members]).view(s, g, *members[0][k].shape).transpose(0, 1).contiguous()
            for k in range(len(members[0]))]


def member_views(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """The stacked tensors viewed as (S, G, ...): member (seed i, sweep point j) at [i, j]."""
    return [p.transpose(0, 1) for p in params]


def unstack(params: list[torch.Tensor], i: int, j: int) -> list[torch.Tensor]:
    """Member (seed i, sweep point j)'s own weights, copied out of the stack."""
    return [p[j, i].clone() for p in params]


def forward(kind: str, params: list[torch.Tensor], x: torch.Tensor,
            dropout: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(S, B, D) -> logits (S, G, B, C) and what ``backward`` needs (the MLP's hidden output). ``dropout``
    (G, S, B, H) holds 0 for a dropped unit and 1/keep for a kept one."""
    s, b, _ = x.shape
    if kind == "linear":
        w, bias = params
        g, c = w.shape[0], w.shape[-1]
        z = torch.baddbmm(bias.permute(1, 0, 2).reshape(s, 1, g * c), x, w.permute(1, 2, 0, 3).reshape(s, -1, g * c))
        return z.view(s, b, g, c).transpose(1, 2), None
    w1, b1, w2, b2 = params                                     # (G, S, D, H), (G, S, H), (G, S, H, C), (G, S, C)
    g = w1.shape[0]
    h = torch.empty(g, s, b, w1.shape[-1])
    for j in range(g):
        torch.baddbmm(b1[j, :, None], x, w1[j], out=h[j])
    h = h.view(g * s, b, -1).relu_()
    if dropout is not None:
        h.mul_(dropout.view(g * s, b, -1))
    z = torch.baddbmm(b2.view(g * s, 1, -1), h, w2.view(g * s, *w2.shape[2:]))
    return z.view(g, s, b, -1).transpose(0, 1), h


def backward(kind: str, params: list[torch.Tensor], x: torch.Tensor, hidden: torch.Tensor | None,
             dropout: torch.Tensor | None, dlogits: torch.Tensor, grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """Write into ``grads`` (shaped like the parameters, kept between steps: fresh megabyte buffers cost page
    faults every step) the gradient of sum(dlogits * logits) with respect to each stacked parameter;
    ``dlogits`` is (S, G, B, C) like the logits."""
    s, g, b, c = dlogits.shape
    xt = x.transpose(1, 2)
    if kind == "linear":
        dz = dlogits.transpose(1, 2).reshape(s, b, g * c)
        grads[0].copy_(torch.bmm(xt, dz).view(s, -1, g, c).permute(2, 0, 1, 3))
        grads[1].copy_(dz.sum(1).view(s, g, c).transpose(0, 1))
        return grads
    w2 = params[2]
    dz = dlogits.transpose(0, 1).reshape(g * s, b, c)
    dh = torch.bmm(dz, w2.view(g * s, *w2.shape[2:]).transpose(1, 2))     # (G*S, B, H)
    dh = torch.ops.aten.threshold_backward(dh, hidden, 0)                  # ReLU's gate (and dropout's zeros)
    if dropout is not None:
        dh.mul_(dropout.view(g * s, b, -1))
    dh = dh.view(g, s, b, -1)
    for j in range(g):
        torch.bmm(xt, dh[j], out=grads[0][j])
    torch.sum(dh, 2, out=grads[1])
    torch.bmm(hidden.transpose(1, 2), dz, out=grads[2].view(g * s, *w2.shape[2:]))
    torch.sum(dz, 1, out=grads[3].view(g * s, c))
    return grads


class StackedAdamW:
    """AdamW (decoupled weight decay, bias-corrected; torch.optim.AdamW's fused kernel, called directly:
    torch.optim's step costs more than the update at these sizes) over stacked (G, S, ...) tensors, each
    sweep point's members in one pass at its own learning rate and weight decay. It owns the gradient
    buffers (``grads``, written by ``backward``) and each sweep point's views of every tensor, made once:
    slicing them afresh each step cost a third of the linear probe's update."""

    def __init__(self, params: list[torch.Tensor], lrs: list[float], weight_decays: list[float],
                 betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lrs, self.weight_decays, self.betas, self.eps = params, lrs, weight_decays, betas, eps
        self.grads = [torch.empty_like(p) for p in params]
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.step_count = torch.zeros(())
        self.lr_factor = 1.0
        self._points = [tuple([t[j] for t in kind] for kind in (params, self.grads, self.m, self.v))
                        for j in range(len(lrs))]
        self._steps = [self.step_count] * len(params)      # one counter, incremented in place, for every tensor

    def step(self) -> None:
        """One update of every member from ``grads``."""
        self.step_count.add_(1)
        for (p, d, m, v), lr, wd in zip(self._points, self.lrs, self.weight_decays):
            torch._fused_adamw_(p, d, m, v, [], self._steps, lr=lr * self.lr_factor, beta1=self.betas[0],
                                beta2=self.betas[1], weight_decay=wd, eps=self.eps, amsgrad=False, maximize=False)

    def cosine(self, epoch: int, total: int) -> None:
        """Cosine annealing to 0 over ``total`` epochs (torch's CosineAnnealingLR, closed form)."""
        self.lr_factor = (1 + math.cos(math.pi * epoch / total)) / 2

    def state(self) -> dict:
        return {"m": self.m, "v": self.v, "step": self.step_count, "factor": self.lr_factor}

    def load(self, state: dict) -> None:
        for mine, saved in zip(self.m + self.v, state["m"] + state["v"]):
            mine.copy_(saved)
        self.step_count.copy_(state["step"])
        self.lr_factor = float(state["factor"])
