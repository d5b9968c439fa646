"""The attribute a fairness intervention or a fairness-aware selection acts on, as data: each row's group
label and code, and its (group x class) cell. Shared by the interventions, the post-processing and the
selection strategies, and importing none of them."""

from __future__ import annotations

import numpy as np

from embedkit.attributes import ACTED_ON
from embedkit.errors import EmbedkitError


def attribute_labels(cfg, cache, rows: np.ndarray) -> tuple[str, np.ndarray, tuple[str, ...]]:
    """(name, each row's group label, group order) of the attribute an intervention or a fairness-aware
    selection acts on (default sex)."""
    from embedkit.attributes import parse
    from embedkit.predictions import attribute_columns

    attr = parse(cfg.attribute or ACTED_ON)[0]
    columns = attribute_columns(cache.meta)
    missing = [c for c in attr.columns if c not in columns]
    if missing:
        raise EmbedkitError(f"--attribute {cfg.attribute}: the manifest has no column {', '.join(missing)}")
    labels = attr.labels({k: v[rows] for k, v in columns.items()})
    return attr.name, labels, attr.order(labels)


def group_codes(cfg, cache, split) -> np.ndarray:
    """(N,) each row's group index; rows missing the attribute share one extra group."""
    _, labels, order = attribute_labels(cfg, cache, split.rows)
    return np.array([order.index(v) if v in order else len(order) for v in labels])


def label_codes(split) -> tuple[np.ndarray, int]:
    """(N,) each row's label as a cell code, and how many codes: the class, or for a binary task 1 / 0 and a
    third code for a masked label. A multi-label image has no single label, so no (group x label) cell."""
    y = split.y.numpy()
    if y.ndim == 1:
        return y, int(y.max()) + 1
    if y.shape[1] != 1:
        raise EmbedkitError("this intervention balances (group x label) cells, which a multi-label image does not "
                            "have (it has several labels at once): use it with --task binary or multiclass")
    return np.where(np.isnan(y[:, 0]), 2, np.nan_to_num(y[:, 0])).astype(np.int64), 3


def cells(cfg, cache, split) -> np.ndarray:
    """(N,) code of each row's (group, label) cell; rows missing the attribute share one group."""
    labels, n = label_codes(split)
    return group_codes(cfg, cache, split) * max(n, len(cache.classes)) + labels
