"""Join a manifest's rows to a cache by image: labels, splits and attributes come from the manifest
the experiment runs on, the embeddings from the cache, so a re-split, relabelled or extended-column
manifest (a cross-validation round, say) needs no re-encoding."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np

from embedkit.cache.identity import row_keys
from embedkit.cache.layout import META_COLUMNS, Cache, TextSet
from embedkit.errors import EmbedkitError
from pathlib import Path

from embedkit.manifest import Manifest


def join(cache: Cache, manifest: Manifest, text_classes: tuple[str, ...] | None = None) -> Cache:
    """The store's rows for the manifest's images (found by content key through the store's index),
    in the manifest's order, with the manifest's metadata and the prompt sets of its classes (or of
    ``text_classes``: a findings task's findings and their negative sides); images extraction left out as
    bad are dropped, images the store lacks (new, or changed since) are an error saying what to run."""
    keys = row_keys(manifest, cache.index)
    row_of = {str(k): i for i, k in enumerate(cache.image_id)}
    bad = {p for p, _ in cache.bad}
    kept = np.array([i for i, k in enumerate(keys) if k.path not in bad], dtype=np.int64)
    missing = [i for i in kept if keys[i].key not in row_of]
    if missing:
        raise EmbedkitError(f"{cache.path}: {len(missing)} image(s) of {manifest.path} are not in this store, or changed "
                            f"since (e.g. {manifest.table['image_id'][missing[0]]}); run `embedkit extract` for this "
                            "manifest (it encodes only those)")
    rows = np.array([row_of[keys[i].key] for i in kept], dtype=np.int64)
    columns = (*META_COLUMNS, *(c for c in ("age", *manifest.extra_columns) if c not in META_COLUMNS))
    meta = {c: manifest.table[c][kept].astype(str) for c in columns}   # every manifest column: any can be an attribute
    same_order = len(rows) == len(cache.embeddings) and np.array_equal(rows, np.arange(len(rows)))
    return replace(cache, embeddings=cache.embeddings if same_order else cache.embeddings[rows],   # no copy when aligned
                   index={},                       # the store's path index stays with the store (~200 MB at 377k)
                   image_id=manifest.table["image_id"][kept].astype(str),
                   meta=meta, classes=text_classes or manifest.classes,
                   text=_text_for(cache, text_classes or manifest.classes, rows),
                   manifest_digest=manifest.digest(), rows_digest=rows_digest([keys[i] for i in kept]),
                   store_rows=rows)


def rows_digest(keys) -> str:
    """One digest of the images a run reads (their content keys in order): a changed file changes it."""
    return hashlib.sha256(",".join(str(k.key) for k in keys).encode()).hexdigest()


def manifest_rows_digest(store: Path, manifest: Manifest) -> str:
    """``rows_digest`` of a manifest's images from the store's index alone (for planning)."""
    from embedkit.cache.layout import read_index

    return rows_digest(row_keys(manifest, read_index(store)))


def _text_for(cache: Cache, classes: tuple[str, ...], rows: np.ndarray) -> dict[str, TextSet]:
    """Prompt sets re-indexed to the manifest's classes (none when a class has no prompts: refresh
    them with ``extract --text-only``); GLoRIA's per-image similarities follow the rows, and a set whose
    rows predate one of its prompts (NaN) is left out so zero-shot asks for a fresh extraction."""
    if any(c not in cache.classes for c in classes):
        return {}
    index = {i: classes.index(c) for i, c in enumerate(cache.classes) if c in classes}
    out = {}
    for fmt, t in cache.text.items():
        keep = np.array([int(c) in index for c in t.class_index], dtype=bool)
        local = None if t.local is None else t.local[rows][:, keep]
        if local is not None and np.isnan(local).any():
            continue
        out[fmt] = TextSet(t.embeddings[keep], [p for p, k in zip(t.prompts, keep) if k],
                           np.array([index[int(c)] for c in t.class_index[keep]], dtype=np.int64), local)
    return out


def missing_images(store: Path, manifest: Manifest) -> int:
    """How many of the manifest's images the store does not hold as they are now (0: nothing to extract)."""
    from embedkit.cache.layout import read_index

    index = read_index(store)
    return sum(1 for k in row_keys(manifest, index) if index.get(k.path) != (k.size, k.mtime_ns, k.key))
