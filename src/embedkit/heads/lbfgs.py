"""CLIP's linear-probe protocol (Radford et al. 2021, App. A.3) as an option of the linear head
(``--solver lbfgs``): logistic regression fitted full-batch by L-BFGS on standardised features, the L2
strength chosen on validation from a log sweep.

The loss is the mean cross-entropy (for findings, the masked binary cross-entropy) plus ``l2 / 2 · ||W||²``
(bias unpenalised; scikit-learn's ``C`` is ``1 / (l2 · n)``). The sweep runs from the strongest penalty to
the weakest, each fit starting from the last, the first from zero weights and the best bias alone (the class
log-frequencies; at 112,120 rows this cut the sweep's iterations from 445 to 327). The problem is convex and
its start fixed, so every seed gets the same head: it is fitted once. A sweep point is recorded as
(``lr`` 0, ``weight_decay`` = l2, ``best_epoch`` = L-BFGS iterations), so selection and the run record
treat it like the AdamW sweep. For N ≥ 100,000 rows it costs a few full passes per sweep point instead of
150 epochs per member (docs/benchmarks.md, "A whole dataset").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from embedkit.errors import EmbedkitError

L2S = tuple(10.0 ** k for k in range(1, -7, -1))   # 10 .. 1e-6, strongest first (warm starts)
MAX_ITER = 100                                      # L-BFGS iterations per sweep point
SOLVERS = ("adamw", "lbfgs")


def check(solver: str, kind: str, intervention: bool) -> None:
    """L-BFGS fits the plain linear probe; anything else is an error naming the option."""
    if solver not in SOLVERS:
        raise EmbedkitError(f"--solver {solver!r}: choose {' or '.join(SOLVERS)}")
    if solver == "lbfgs" and kind != "linear":
        raise EmbedkitError(f"--solver lbfgs fits the linear probe, not {kind}; use --solver adamw for {kind}")
    if solver == "lbfgs" and intervention:
        raise EmbedkitError("--solver lbfgs fits the plain (ERM) linear probe; interventions train with --solver adamw")


@dataclass
class Fit:
    """One sweep point at its optimum."""

    l2: float
    weight: torch.Tensor          # (D, C)
    bias: torch.Tensor            # (C,)
    val_loss: float
    iterations: int


def sweep(xtr: torch.Tensor, ytr: torch.Tensor, xva: torch.Tensor, yva: torch.Tensor, n_classes: int,
          loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], l2s: tuple[float, ...] = L2S, *,
          mean: torch.Tensor | float = 0.0, std: torch.Tensor | float = 1.0) -> list[Fit]:
    """Every L2 strength of ``l2s`` fitted on ``(xtr - mean) / std`` (each from the previous optimum, the first
    from the best bias alone), in order; ``loss(logits, y)`` is the mean data loss (cross-entropy, or masked
    binary cross-entropy for findings)."""
    columns, xva = by_feature(xtr, mean, std), (xva - mean).div_(std)
    w = torch.zeros(n_classes, xtr.shape[1], requires_grad=True)           # (C, D): see _fit
    b = _best_bias(ytr, n_classes, loss).requires_grad_()
    fits = []
    for l2 in l2s:
        iterations = _fit(columns, ytr, w, b, l2, loss)
        with torch.no_grad():
            weight = w.detach().T.contiguous()
            fits.append(Fit(l2, weight, b.detach().clone(), float(loss(torch.addmm(b, xva, weight), yva)), iterations))
    return fits


def by_feature(x: torch.Tensor, mean: torch.Tensor | float, std: torch.Tensor | float,
               chunk: int = 16384) -> torch.Tensor:
    """(D, N) standardised ``x``, written chunk by chunk (one copy of the data, no temporary of its size)."""
    out = torch.empty(x.shape[1], x.shape[0])
    for s in range(0, len(x), chunk):
        out[:, s:s + chunk] = ((x[s:s + chunk] - mean) / std).T
    return out


def _best_bias(y: torch.Tensor, n_classes: int, loss) -> torch.Tensor:
    """The loss's optimum with zero weights (class log-frequencies, finding log-odds): the sweep's start,
    found by L-BFGS on the bias alone (no pass over the features)."""
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([b], lr=1.0, max_iter=MAX_ITER, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = loss(b.expand(len(y), n_classes), y)
        value.backward()
        return value

    opt.step(closure)
    return b.detach()


def _fit(columns: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor, l2: float, loss) -> int:
    """Minimise the penalised loss from the current (w, b), in place; returns the iterations taken. The two
    products over the data are (C, D) @ (D, N) and (C, N) @ (N, D) on (D, N) features: one thread of torch
    took ~1.25x longer per iteration with the (N, D) @ (D, C) form (78,502 × 512, 14 classes)."""
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=MAX_ITER, history_size=20, tolerance_grad=1e-5,
                            tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure():
        with torch.no_grad():
            logits = torch.mm(w, columns).T.contiguous().add_(b).requires_grad_()
        value = loss(logits, y)
        value.backward()                                  # autograd over the (N, C) logits only
        with torch.no_grad():
            w.grad = torch.mm(logits.grad.T.contiguous(), columns.T).add_(w, alpha=l2)
            b.grad = logits.grad.sum(0)
            return value.detach() + 0.5 * l2 * (w * w).sum()

    opt.step(closure)
    return int(opt.state[w].get("n_iter", 0))
