"""Images for fine-tuning: decoded and preprocessed once and kept in memory when they fit,
otherwise streamed from disk each epoch through the same DataLoader as extraction."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from embedkit.models.images import ImageRows, collate
from embedkit.errors import EmbedkitError
from embedkit.manifest import Manifest


@dataclass
class Images:
    """Preprocessed images of some manifest rows; ``batches`` yields tensors for index lists."""

    rows: np.ndarray                 # manifest row of each image
    labels: torch.Tensor
    tensors: torch.Tensor | None     # (N, C, H, W) when held in memory
    dataset: ImageRows | None = None
    workers: int = 1

    def batches(self, index_batches: list[list[int]]) -> Iterator[torch.Tensor]:
        if self.tensors is not None:
            for b in index_batches:
                yield self.tensors[b]
            return
        sampler = [[int(self.rows[i]) for i in b] for b in index_batches]
        loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.workers, collate_fn=collate)
        for _, (x,), errors in loader:
            if any(errors):
                raise EmbedkitError(next(e for e in errors if e))
            yield x


def load_images(manifest: Manifest, preprocess, *, splits: tuple[str, ...], labels: np.ndarray, skip_bad: bool,
                memory_limit_gb: float, workers: int) -> dict[str, Images]:
    """Per split, the images (in memory when the estimate is under ``memory_limit_gb``)."""
    dataset = ImageRows([manifest.image_path(r) for r in manifest.rows], [preprocess])
    shape = dataset.shapes[0]
    split_col = manifest.column("split")
    wanted = np.flatnonzero(np.isin(split_col, splits))
    in_memory = len(wanted) * int(np.prod(shape)) * 4 / 2**30 <= memory_limit_gb
    bad: dict[int, str] = {}
    tensors: dict[int, torch.Tensor] = {}
    batches = [list(wanted[i:i + 64]) for i in range(0, len(wanted), 64)]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate)
    for rows, (x,), errors in loader:  # one pass: decode (and keep) or just check every image
        for r, t, e in zip(rows, x, errors):
            if e:
                bad[r] = e
            elif in_memory:
                tensors[r] = t
    if bad and not skip_bad:
        r, e = next(iter(bad.items()))
        raise EmbedkitError(f"bad image: {e} (image_id {manifest.rows[r]['image_id']}); fix it or pass --skip-bad")
    out = {}
    for s in splits:
        rows = np.array([r for r in np.flatnonzero(split_col == s) if r not in bad], dtype=np.int64)
        out[s] = Images(rows, torch.from_numpy(labels[rows]),
                        torch.stack([tensors[r] for r in rows]) if in_memory else None,
                        None if in_memory else dataset, workers)
    return out
