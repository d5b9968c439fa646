"""What fine-tuning predicts and minimises, by task (``embedkit.tasks``): class indices with cross-entropy and
softmax probabilities (the paper's), or a binary / multi-label task's finding targets (NaN where masked) with the
cached-feature heads' masked binary cross-entropy and one sigmoid per finding."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from embedkit.heads.trained import masked_bce
from embedkit.manifest import Manifest
from embedkit.spec import Task


def targets(task: Task, manifest: Manifest) -> tuple[np.ndarray, tuple[str, ...]]:
    """(labels per manifest row, the classes or findings they index): class indices, or (N, F) float targets."""
    from embedkit import tasks

    if task.kind == "multiclass":
        tasks.check_multiclass(manifest.column("label"), where=str(manifest.path))
        return manifest.labels(), manifest.classes
    masked = manifest.column(tasks.MASKED_COLUMN) if tasks.MASKED_COLUMN in manifest.extra_columns else None
    findings, truth = tasks.targets(task, manifest.column("label"), masked, where=str(manifest.path))
    return truth.astype(np.float32), findings


def findings(labels: torch.Tensor) -> bool:
    """Whether ``labels`` are finding targets (N, F) rather than class indices (N,)."""
    return labels.dim() == 2


def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The batch's mean training loss."""
    return masked_bce(logits, labels).mean() if findings(labels) else F.cross_entropy(logits, labels)


def probabilities(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits) if findings(labels) else F.softmax(logits, -1)


def validation_loss(p: torch.Tensor, labels: torch.Tensor) -> float:
    """The mean loss of probabilities ``p`` (what the epoch and sweep selection minimise)."""
    if not findings(labels):
        return float(F.nll_loss(torch.log(p.clamp_min(1e-12)), labels))
    labelled = ~torch.isnan(labels)
    y = torch.nan_to_num(labels)
    bce = -(y * torch.log(p.clamp_min(1e-12)) + (1 - y) * torch.log((1 - p).clamp_min(1e-12))) * labelled
    return float((bce.sum(-1) / labelled.sum(-1).clamp_min(1)).mean())
