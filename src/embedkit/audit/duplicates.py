"""Leakage audit: exact duplicates (one image content under several manifest rows) and near
duplicates (cosine of the embeddings above a threshold calibrated on the data), across splits and
across patients — what patient ids alone cannot catch.

The threshold, unless given, is an outlier rule on each image's nearest-neighbour cosine:
median + 6 × 1.4826 × MAD (a robust 6-sigma), so that it adapts to how spread an encoder's space is.
Nearest neighbours come from faiss (exact inner product on normalised embeddings; ``docs/benchmarks.md``
compares it with torch top-k).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from embedkit.cache.layout import Cache
from embedkit.manifest import Manifest

K = 5  # neighbours looked at per image


@dataclass
class Duplicates:
    threshold: float
    calibrated: bool
    pairs: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        kinds = Counter(p["kind"] for p in self.pairs)
        splits = Counter("/".join(sorted((p["split_a"], p["split_b"]))) for p in self.pairs)
        cross = sum(p["patient_a"] != p["patient_b"] for p in self.pairs)
        return {"threshold": self.threshold, "calibrated": self.calibrated, "pairs": len(self.pairs),
                "exact": kinds.get("exact", 0), "near": kinds.get("near", 0), "per_split_pair": dict(splits),
                "across_patients": cross,
                "leaks": sum(p["split_a"] != p["split_b"] for p in self.pairs)}


def neighbours(x: np.ndarray, k: int = K) -> tuple[np.ndarray, np.ndarray]:
    """(cosines, indices) of each row's ``k`` nearest other rows (exact search, faiss)."""
    import faiss

    z = np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12), dtype=np.float32)
    index = faiss.IndexFlatIP(z.shape[1])
    index.add(z)
    sims, idx = index.search(z, min(k + 1, len(z)))
    return sims[:, 1:], idx[:, 1:]  # drop each row itself


def calibrated_threshold(nearest: np.ndarray) -> float:
    med = float(np.median(nearest))
    mad = float(np.median(np.abs(nearest - med)))
    return min(med + 6 * 1.4826 * mad, 0.999999)


def find(view: Cache, manifest: Manifest, store: Cache, *, threshold: float | None = None) -> Duplicates:
    from embedkit.cache.identity import row_keys

    keys = [k.key for k in row_keys(manifest, store.index)]
    by_id = {r["image_id"]: (r["split"], r["patient_id"]) for r in manifest.rows}
    key_of = {r["image_id"]: k for r, k in zip(manifest.rows, keys)}
    ids = list(view.image_id)
    pairs, seen = [], set()

    def add(kind, a, b, cos):
        if (a, b) in seen or (b, a) in seen:
            return
        seen.add((a, b))
        (sa, pa), (sb, pb) = by_id[a], by_id[b]
        pairs.append({"kind": kind, "image_a": a, "image_b": b, "split_a": sa, "split_b": sb,
                      "patient_a": pa, "patient_b": pb, "cosine": round(float(cos), 6)})

    groups: dict[str, list[str]] = {}
    for i in ids:
        groups.setdefault(key_of[i], []).append(i)
    for members in groups.values():
        for j in range(1, len(members)):
            add("exact", members[0], members[j], 1.0)
    sims, idx = neighbours(np.asarray(view.embeddings, dtype=np.float32))
    exact = {i for m in groups.values() if len(m) > 1 for i in m}
    nearest = np.array([s[0] for i, s in zip(ids, sims) if i not in exact]) if len(sims) else np.zeros(0)
    calibrated = threshold is None
    t = calibrated_threshold(nearest) if calibrated and len(nearest) else (threshold or 0.999999)
    for a, (row_s, row_i) in enumerate(zip(sims, idx)):
        for s, b in zip(row_s, row_i):
            if s >= t and b >= 0 and key_of[ids[a]] != key_of[ids[b]]:
                add("near", ids[a], ids[b], s)
    pairs.sort(key=lambda p: (p["kind"] != "exact", -p["cosine"]))
    return Duplicates(t, calibrated, pairs)
