"""Stacked training equals training each member alone with torch's own AdamW and cosine schedule."""

import pytest
import torch
from torch.nn import functional as F

from embedkit.heads.features import Split
from embedkit.heads.stacked import init as _init
from embedkit.heads.trained import HeadConfig, member_generator, order_generator, train_heads

from .conftest import separable


def _alone(kind, xtr, ytr, xva, yva, seed, lr, wd, cfg, n_classes):
    """One member the plain way: torch.optim.AdamW, CosineAnnealingLR, its own generators."""
    mean, std = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
    xtr, xva = (xtr - mean) / std, (xva - mean) / std
    order, g = order_generator(seed), member_generator(seed, lr, wd)
    params = [p.requires_grad_() for p in _init(kind, xtr.shape[1], n_classes, cfg.hidden, g)]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=cfg.betas, eps=cfg.eps)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)

    def logits(x, mask=None):
        if kind == "linear":
            return x @ params[0] + params[1]
        h = F.relu(x @ params[0] + params[1])
        return (h if mask is None else h * mask) @ params[2] + params[3]

    best = (float("inf"), 0)
    for epoch in range(cfg.epochs):
        perm = torch.randperm(len(xtr), generator=order)
        for s in range(0, len(xtr), cfg.batch_size):
            idx = perm[s:s + cfg.batch_size]
            mask = None
            if kind == "mlp":
                mask = (torch.rand(len(idx), cfg.hidden, generator=g) < 1 - cfg.dropout) / (1 - cfg.dropout)
            opt.zero_grad()
            F.cross_entropy(logits(xtr[idx], mask), ytr[idx]).backward()
            opt.step()
        sched.step()
        with torch.no_grad():
            vl = float(F.cross_entropy(logits(xva), yva))
        if vl < best[0]:
            best = (vl, epoch + 1)
    return best


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_stacked_members_train_as_they_would_alone(kind):
    x, y, split = separable(n=200, d=6)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    tr, va = torch.from_numpy(split == "train"), torch.from_numpy(split == "val")
    cfg = HeadConfig(kind=kind, epochs=12, batch_size=32, lrs=(1e-3, 3e-2), weight_decays=(1e-4, 1e-1), hidden=8)
    heads = train_heads(Split(x[tr], y[tr], None), Split(x[va], y[va], None), cfg, [0, 3], 3)
    for head, seed in zip(heads, (0, 3)):
        for point in head.sweep:
            loss, epoch = _alone(kind, x[tr], y[tr], x[va], y[va], seed, point["lr"], point["weight_decay"], cfg, 3)
            assert point["best_epoch"] == epoch
            assert point["val_loss"] == pytest.approx(loss, rel=1e-5, abs=1e-6)


def test_a_member_is_the_same_in_any_sweep():
    x, y, split = separable(n=150, d=5)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    tr, va = torch.from_numpy(split == "train"), torch.from_numpy(split == "val")
    parts = Split(x[tr], y[tr], None), Split(x[va], y[va], None)
    one = train_heads(*parts, HeadConfig(kind="mlp", epochs=5, lrs=(1e-2,), weight_decays=(1e-2,), hidden=8), [1], 3)[0]
    many = train_heads(*parts, HeadConfig(kind="mlp", epochs=5, lrs=(1e-3, 1e-2), weight_decays=(1e-2,), hidden=8), [0, 1], 3)
    assert many[1].sweep[1]["val_loss"] == pytest.approx(one.val_loss, rel=1e-6)


def test_lbfgs_probe_is_clip_protocol_logistic_regression():
    """--solver lbfgs: the penalised multinomial logistic regression scikit-learn fits (C = 1 / (l2 · n)), each
    L2 strength of the sweep at its optimum, the one with the lowest validation loss chosen."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    from embedkit.heads import lbfgs
    from embedkit.heads.features import Split
    from embedkit.heads.trained import HeadConfig, train_sweep

    rng = np.random.default_rng(0)
    n, d, c = 1500, 16, 3
    y = rng.integers(0, c, n)
    x = (rng.normal(size=(n, d)) + 0.6 * rng.normal(size=(c, d))[y]).astype(np.float32)
    part = lambda s: Split(torch.from_numpy(x[s]), torch.from_numpy(y[s]), np.arange(n)[s])  # noqa: E731
    [members, again] = train_sweep(part(slice(0, 1000)), part(slice(1000, None)), HeadConfig(solver="lbfgs"), [0, 1], c)
    best = min(members, key=lambda h: h.val_loss)
    assert [h.weight_decay for h in members] == list(lbfgs.L2S) and again[0].seed == 1      # every seed: the same fit
    assert torch.equal(again[0].params[0], members[0].params[0])
    xs = (x[:1000] - x[:1000].mean(0)) / x[:1000].std(0, ddof=1)
    ref = LogisticRegression(C=1 / (best.weight_decay * 1000), tol=1e-10, max_iter=10_000).fit(xs, y[:1000])
    w = best.params[0].numpy()
    assert np.abs((w - w.mean(1, keepdims=True)) - ref.coef_.T).max() < 5e-3       # softmax: W up to a per-row shift
    assert 0 < best.weight_decay < max(lbfgs.L2S)                                   # an interior choice


def test_lbfgs_starts_from_the_best_bias_alone():
    """The sweep's start: zero weights and the loss's optimal bias, the class log-frequencies (softmax, up to a
    shift) or each finding's weighted log-odds among its labelled rows (masked binary cross-entropy)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from embedkit.heads.lbfgs import _best_bias
    from embedkit.heads.trained import masked_bce

    y = torch.tensor([0] * 6 + [1] * 3 + [2])
    b = _best_bias(y, 3, F.cross_entropy).numpy()
    assert np.allclose(b - b.mean(), np.log([0.6, 0.3, 0.1]) - np.log([0.6, 0.3, 0.1]).mean(), atol=1e-4)
    t = torch.tensor([[1.0, 0.0], [0.0, float("nan")], [0.0, 1.0], [0.0, 0.0]])
    b = _best_bias(t, 2, lambda z, y: masked_bce(z, y).mean()).numpy()
    # a row's findings share its weight: finding 1 is positive in 0.5 of 2.5 weight, finding 2 in 0.5 of 1.5
    assert np.allclose(b, [np.log(0.2 / 0.8), np.log(0.5 / 1.0)], atol=1e-3)      # float32 losses: ~2e-4 apart


def test_lbfgs_refuses_what_it_does_not_fit():
    import pytest

    from embedkit.errors import EmbedkitError
    from embedkit.heads.lbfgs import check

    with pytest.raises(EmbedkitError, match="linear probe, not mlp"):
        check("lbfgs", "mlp", intervention=False)
    with pytest.raises(EmbedkitError, match="interventions train with --solver adamw"):
        check("lbfgs", "linear", intervention=True)
    with pytest.raises(EmbedkitError, match="choose adamw or lbfgs"):
        check("sgd", "linear", intervention=False)
