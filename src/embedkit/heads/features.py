"""Cached features for the heads: find the cache of a (model, manifest) pair and split it."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from embedkit.cache import Cache, read_cache
from embedkit.cache import find_cache as _find
from embedkit.errors import EmbedkitError
from embedkit.manifest import read_manifest
from embedkit.spec import TASK, Task


def find_cache(model: str, manifest: Path, cache_dir: Path, *, expect: dict | None = None) -> Path:
    """The store of ``model`` in ``cache_dir`` (the join then checks it holds the manifest's images)."""
    return _find(model, cache_dir, expect=expect, manifest_hint=str(manifest))


def of_model(cache: Cache, model: str) -> Cache:
    """The store, refused when it holds another model's embeddings (a --cache-file given by hand): a run is filed,
    and reported, under ``model``'s name."""
    held = cache.attrs.get("model")
    if held is not None and held != model:
        raise EmbedkitError(f"{cache.path}: holds {held}'s embeddings, not {model}'s; give --model {held}, or "
                            f"{model}'s store (`embedkit cache ls`)")
    return cache


@dataclass
class Split:
    """One split's features and labels, plus the rows' identities for the predictions file."""

    x: torch.Tensor
    y: torch.Tensor
    rows: np.ndarray  # indices into the cache


def splits(cache: Cache, targets: np.ndarray | None = None) -> dict[str, Split]:
    """Train, val and test features with their labels: class indices, or (N, F) finding ``targets`` (NaN masked)."""
    x = torch.from_numpy(np.asarray(cache.embeddings, dtype=np.float32))
    y = torch.from_numpy(cache.labels() if targets is None else targets.astype(np.float32))
    out = {}
    for name in ("train", "val", "test"):
        idx = np.flatnonzero(cache.split(name))
        if len(idx) == 0:
            raise EmbedkitError(f"{cache.path}: no '{name}' rows; the heads need train, val and test splits")
        out[name] = Split(x[idx], y[idx], idx)
    return out


@contextmanager
def torch_threads(n: int | None):
    """Run a block with ``n`` torch threads (None: one; small head training is fastest on one: docs/benchmarks.md)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n or 1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _read(cache_path: Path, manifest: Path) -> Cache:
    """The store, or an error whose fix is the one command to run (filled in for this model and manifest)."""
    from embedkit.errors import DamagedCache

    try:
        return read_cache(cache_path)
    except DamagedCache as exc:
        raise exc.advice(manifest) from None


def load(cache_path: Path, manifest: Path, task: Task = TASK) -> tuple[Cache, dict[str, Split]]:
    """The cache joined to the manifest's rows (its labels, splits, attributes), split for the heads; for a
    binary or multi-label ``task`` the cache's classes are the task's findings, its prompt sets each finding's
    positive and negative side, and the labels the findings' targets."""
    from dataclasses import replace

    from embedkit import tasks
    from embedkit.cache.join import join
    from embedkit.prompts import pair_classes

    store, rows = _read(cache_path, manifest), read_manifest(manifest)
    if task.kind == "multiclass":
        cache = join(store, rows)
        tasks.check_multiclass(cache.meta["label"], where=str(manifest))
        return cache, splits(cache)
    masked = rows.column(tasks.MASKED_COLUMN) if tasks.MASKED_COLUMN in rows.extra_columns else None
    findings = tasks.findings_for(task, rows.column("label"), masked, where=str(manifest))
    cache = join(store, rows, text_classes=pair_classes(findings))
    fixed = replace(task, findings=findings) if task.kind == "multilabel" else task
    _, truth = tasks.targets(fixed, cache.meta["label"], cache.meta.get(tasks.MASKED_COLUMN), where=str(manifest))
    return replace(cache, classes=findings), splits(replace(cache, classes=findings), truth)
