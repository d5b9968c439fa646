"""What the in-training fairness interventions share: their training weights and the rule that an
in-processing intervention trains a linear or MLP head (the attribute they act on: ``heads.groups``)."""

from __future__ import annotations

import numpy as np
import torch

from embedkit.attributes import ACTED_ON
from embedkit.errors import EmbedkitError
from embedkit.heads.trained import TrainedMethod


def kamiran_calders(group: np.ndarray, y: np.ndarray) -> torch.Tensor:
    """Kamiran & Calders' (2012) reweighing: w(a, y) = P(A = a) P(Y = y) / P(A = a, Y = y), the weight that
    makes attribute and label independent in the weighted training set (mean 1 by construction)."""
    n = len(y)
    _, a = np.unique(group, return_inverse=True)
    _, c = np.unique(y, return_inverse=True)
    p_a, p_y = np.bincount(a) / n, np.bincount(c) / n
    joint = np.bincount(a * (c.max() + 1) + c) / n
    w = p_a[a] * p_y[c] / joint[a * (c.max() + 1) + c]
    return torch.from_numpy(w).float()


def inverse_frequency(codes: np.ndarray) -> torch.Tensor:
    """Per-row weight 1 / (its cell's count), scaled to mean 1 over the rows."""
    counts = np.bincount(codes)
    w = 1.0 / counts[codes]
    return torch.from_numpy(w / w.mean()).float()


class Mitigation(TrainedMethod):
    """An in-processing intervention on the ``--head`` (linear or MLP) it trains."""

    needs_attribute = True
    on_heads = ("linear", "mlp")
    strength_default: float | None = None

    def head_kind(self, cfg) -> str:
        if cfg.method not in ("linear", "mlp"):
            raise EmbedkitError(f"--mitigate {self.name} trains a head: use it with --head linear or mlp")
        return cfg.method

    def strength(self, cfg) -> float | None:
        return self.strength_default if cfg.strength is None else cfg.strength

    def settings(self, cfg) -> dict:
        return super().settings(cfg) | {"mitigate": self.name, "attribute": cfg.attribute or ACTED_ON,
                                        "strength": self.strength(cfg)}
