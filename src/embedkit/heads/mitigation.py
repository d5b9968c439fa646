"""What the fairness interventions share: the attribute they act on, its (group x class) cells on the
training split, and the rule that an in-processing intervention trains a linear or MLP head."""

from __future__ import annotations

import numpy as np
import torch

from embedkit.errors import EmbedkitError
from embedkit.heads.trained import TrainedMethod


def attribute_labels(cfg, cache, rows: np.ndarray) -> tuple[str, np.ndarray, tuple[str, ...]]:
    """(name, each row's group label, group order) of the attribute an intervention or a fairness-aware
    selection acts on (default sex)."""
    from embedkit.attributes import parse
    from embedkit.runs import attribute_columns

    attr = parse(cfg.attribute or "sex")[0]
    columns = attribute_columns(cache.meta)
    missing = [c for c in attr.columns if c not in columns]
    if missing:
        raise EmbedkitError(f"--attribute {cfg.attribute}: the manifest has no column {', '.join(missing)}")
    labels = attr.labels({k: v[rows] for k, v in columns.items()})
    return attr.name, labels, attr.order(labels)


def cells(cfg, cache, split) -> np.ndarray:
    """(N,) code of each row's (group, class) cell; rows missing the attribute share one group."""
    _, labels, order = attribute_labels(cfg, cache, split.rows)
    group = np.array([order.index(v) if v in order else len(order) for v in labels])
    return group * len(cache.classes) + split.y.numpy()


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
        return super().settings(cfg) | {"mitigate": self.name, "attribute": cfg.attribute or "sex",
                                        "strength": self.strength(cfg)}
