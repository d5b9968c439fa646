"""Choosing among fine-tuning's sweep points (each learning rate x weight decay at its epoch of lowest
validation loss) by a selection strategy, on validation only — the heads' strategies (``heads.selection``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def choose(cfg, manifest, val, fits: list, val_proba: list[np.ndarray]) -> tuple[int, dict]:
    """The index of the chosen fit and the record of the choice (strategy, attribute, every candidate's scores)."""
    from embedkit.attributes import ACTED_ON, parse
    from embedkit.heads.selection import CRITERIA, pick, scores

    attr = parse(cfg.attribute or ACTED_ON)[0]
    labels = attr.labels({c: manifest.column(c)[val.rows] for c in attr.columns})
    order = attr.order(labels)
    candidates = [scores(val.labels.numpy(), p, labels, order) for p in val_proba]
    index = pick(cfg.selection, candidates, [f.best_val_loss for f in fits])
    return index, {"strategy": cfg.selection, "criterion": CRITERIA[cfg.selection], "attribute": attr.name,
                   "candidates": candidates}


def checkpoint_dir(folder: Path, lr: float, wd: float) -> Path:
    """Where a sweep point's last state and its best state live (``last.pt``)."""
    return folder / "checkpoints" / f"lr-{lr:g}-wd-{wd:g}"
