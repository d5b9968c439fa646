"""The stacked network's written-out gradients equal autograd's on each member computed alone, and the
objectives' gradients equal autograd over their losses."""

import pytest
import torch
from torch.nn import functional as F

from embedkit.heads import stacked
from embedkit.heads.reweight import Weighted
from embedkit.heads.trained import Objective, Targets


def _members(kind, s, g, d=7, c=3, hidden=5):
    gens = [torch.Generator().manual_seed(10 * i + j) for i in range(s) for j in range(g)]
    return stacked.stack([stacked.init(kind, d, c, hidden, gen) for gen in gens], s, g)


@pytest.mark.parametrize("kind,dropout", [("linear", False), ("mlp", False), ("mlp", True)])
def test_written_gradients_equal_autograd_member_by_member(kind, dropout):
    s, g, b = 3, 2, 11
    params = _members(kind, s, g)
    x = torch.randn(s, b, 7, generator=torch.Generator().manual_seed(1))
    drop = (torch.rand(g, s, b, 5, generator=torch.Generator().manual_seed(2)) < 0.7) / 0.7 if dropout else None
    logits, hidden = stacked.forward(kind, params, x, drop)
    dlogits = torch.randn(logits.shape, generator=torch.Generator().manual_seed(3))
    grads = stacked.backward(kind, params, x, hidden, drop, dlogits, [torch.empty_like(p) for p in params])

    for i in range(s):
        for j in range(g):
            mine = [p[j, i].clone().requires_grad_() for p in params]
            if kind == "linear":
                z = x[i] @ mine[0] + mine[1]
            else:
                h = F.relu(x[i] @ mine[0] + mine[1])
                z = (h if drop is None else h * drop[j, i]) @ mine[2] + mine[3]
            assert torch.allclose(z, logits[i, j], atol=1e-5)
            (z * dlogits[i, j]).sum().backward()
            for p, grad in zip(mine, grads):
                assert torch.allclose(grad[j, i], p.grad, atol=1e-5), (i, j)


@pytest.mark.parametrize("findings", [False, True])
def test_row_losses_and_gradient_equal_autograd(findings):
    gen = torch.Generator().manual_seed(4)
    if findings:
        y = (torch.rand(20, 4, generator=gen) < 0.4).float()
        y[torch.rand(20, 4, generator=gen) < 0.3] = float("nan")
    else:
        y = torch.randint(0, 4, (20,), generator=gen)
    idx = torch.randint(0, 20, (2, 6), generator=gen)
    logits = torch.randn(2, 3, 6, 4, generator=gen, requires_grad=True)
    loss, grad = Targets(y, 4)(logits, idx)
    target = y[idx][:, None].expand(-1, 3, *y[idx].shape[1:])
    if findings:
        labelled = ~torch.isnan(target)
        bce = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(target), reduction="none") * labelled
        expected = bce.sum(-1) / labelled.sum(-1).clamp_min(1)
    else:
        expected = F.cross_entropy(logits.reshape(-1, 4), target.reshape(-1), reduction="none").view(2, 3, 6)
    assert torch.allclose(loss, expected.reshape(6, 6), atol=1e-6)
    expected.sum().backward()
    assert torch.allclose(grad, logits.grad, atol=1e-6)


def test_objective_gradients_equal_autograd_over_their_losses():
    per_sample, logits = torch.rand(4, 5), torch.randn(2, 2, 5, 3)
    idx = torch.randint(0, 9, (2, 5))
    weighted = Weighted(torch.rand(9) + 0.1, members_per_seed=2)
    for objective in (Objective(), weighted):
        fast, direct = objective.gradient(per_sample, logits, idx)
        rows = per_sample.clone().requires_grad_()
        objective.loss(rows, logits, idx).sum().backward()
        assert direct is None and torch.allclose(fast, rows.grad, atol=1e-7)
