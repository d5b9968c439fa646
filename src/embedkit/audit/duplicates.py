"""Leakage audit: exact duplicates (one image content under several manifest rows) and near duplicates
(re-encoded, resized or slightly shifted copies: an image whose nearest neighbour is far closer than its
second), across splits and across patients — what patient ids alone cannot catch.

Embeddings are centred (the mean direction that every CLIP-like space shares would otherwise squeeze all
cosines towards 1) and normalised. A near copy stands out not by its cosine, whose scale differs from
encoder to encoder, but by Lowe's ratio: its distance to its nearest neighbour over the distance to its
second, ~0.01–0.3 for a copy and ~0.97 for an ordinary image. Unless a cosine threshold is given, a row is
flagged by a test with the family-wise error over all rows held at ``ALPHA``: without copies, ratio^m is
uniform on (0, 1) in intrinsic dimension m (the two-nearest-neighbour law; Facco et al., Sci. Rep. 2017), so
a row is flagged when ratio^m ≤ ALPHA / rows (Bonferroni), m estimated as ln 2 / median(−log ratio), which
the copies themselves barely move. (A robust 6-sigma bound on the log ratios, used before, flagged ~0.5 %
of rows on data with no copies at all: the log ratio's lower tail is exponential, not normal.)

The search is exact either way (``audit.search``): brute force below ``search.EXACT_BELOW`` rows; above, the
dimension m is estimated on ``SAMPLE`` rows' exact neighbours and only rows with another row within their test
radius — found exactly by a scan on principal axes — are searched in full.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from embedkit.audit import search
from embedkit.cache.layout import Cache
from embedkit.manifest import Manifest

K = 5                      # neighbours a cosine threshold looks at per image
ALPHA = 0.05               # family-wise error of the near-copy flags over all rows searched
SAMPLE = 2_000             # rows whose exact neighbours estimate the intrinsic dimension, from search.EXACT_BELOW


@dataclass
class Duplicates:
    threshold: float               # the cosine threshold given, or the calibrated distance ratio
    calibrated: bool
    pairs: list[dict] = field(default_factory=list)
    search: str = "exact"
    tested: int = 0                # rows the calibrated test ran over (its family)
    dimension: float | None = None  # the intrinsic dimension the calibrated bound was derived from

    def rule(self) -> str:
        """How near pairs were told apart, for tables."""
        if self.calibrated and self.dimension is None:
            return "no distance-ratio test (fewer than 3 distinct images)"
        if self.calibrated:
            return (f"distance ratio ≤ {self.threshold:.3f} (family-wise α {ALPHA} over {self.tested:,} images, "
                    f"intrinsic dimension {self.dimension:.1f})")
        return f"cosine ≥ {self.threshold:.4f}"

    def summary(self) -> dict:
        kinds = Counter(p["kind"] for p in self.pairs)
        splits = Counter("/".join(sorted((p["split_a"], p["split_b"]))) for p in self.pairs)
        cross = sum(p["patient_a"] != p["patient_b"] for p in self.pairs)
        return {"threshold": self.threshold, "calibrated": self.calibrated, "near_when": self.rule(),
                "search": self.search, "intrinsic_dimension": self.dimension, "alpha": ALPHA if self.calibrated else None,
                "pairs": len(self.pairs), "exact": kinds.get("exact", 0), "near": kinds.get("near", 0),
                "per_split_pair": dict(splits), "across_patients": cross,
                "leaks": sum(p["split_a"] != p["split_b"] for p in self.pairs)}


def normalised(x: np.ndarray, rows: np.ndarray | None = None, chunk: int = 65_536) -> np.ndarray:
    """Centred, unit-length ``rows`` of ``x`` (default: all) as a new contiguous float32 array (faiss's input),
    made in place in that one copy; the norms by chunks of rows (np.linalg.norm squares its whole input into a
    temporary as large as the copy: at 377,110 × 512 that was the audit's peak, 0.7 GiB over the rest)."""
    x = np.asarray(x)
    z = np.array(x, dtype=np.float32, order="C") if rows is None else np.ascontiguousarray(x[rows], dtype=np.float32)
    z -= z.mean(0, dtype=np.float64).astype(np.float32)
    for start in range(0, len(z), chunk):
        part = z[start:start + chunk]
        part /= np.linalg.norm(part, axis=1, keepdims=True).clip(1e-12)
    return z


def distance_ratio(sims: np.ndarray) -> np.ndarray:
    """Nearest over second-nearest Euclidean distance of unit vectors (from their cosines)."""
    d = np.sqrt(np.clip(2 - 2 * sims[:, :2].astype(np.float64), 0, None))
    return d[:, 0] / np.maximum(d[:, 1], 1e-12)


def ratio_bound(ratios: np.ndarray, tested: int | None = None, alpha: float = ALPHA) -> tuple[float, float]:
    """(bound, intrinsic dimension m): the distance ratio at or below which a row is flagged, holding the
    family-wise error over ``tested`` rows (default: one per ratio) at ``alpha``; m = ln 2 / median(−log ratio)."""
    med = float(np.median(-np.log(np.clip(ratios, 1e-300, 1.0))))
    if med <= 0:                                     # most rows equidistant from two neighbours: only R = 0 is a copy
        return 0.0, float("inf")
    m = float(np.log(2) / med)
    return float((alpha / (tested or len(ratios))) ** (1 / m)), m


@dataclass
class Near:
    pairs: list[tuple[int, int, float]]     # (row, its near row, cosine), rows of the searched embeddings
    bound: float                            # the ratio bound or the cosine threshold
    search: str
    dimension: float | None = None


def find(view: Cache, manifest: Manifest, *, threshold: float | None = None, exact: bool | None = None) -> Duplicates:
    """Exact copies (same content key) and near copies (the ratio test, or cosine >= ``threshold``) among the
    rows of a joined ``view`` of ``manifest``; ``exact`` forces (True) or forbids (False) brute-force search."""
    ids = [str(i) for i in view.image_id]
    copies, unique = _copies(ids, view.store_rows)
    found = [("exact", a, b, 1.0) for a, b in copies]
    if unique.sum() < 3:
        return Duplicates(threshold or 1.0, threshold is None, _pairs(manifest, found))
    rows = np.flatnonzero(unique)
    z = normalised(view.embeddings, None if unique.all() else rows)
    brute = exact if exact is not None else len(z) < search.EXACT_BELOW
    near = near_by_ratio(z, brute) if threshold is None else near_by_cosine(z, threshold, brute)
    found += [("near", ids[rows[a]], ids[rows[b]], cos) for a, b, cos in near.pairs]
    pairs = _pairs(manifest, found)
    pairs.sort(key=lambda p: (p["kind"] != "exact", -p["cosine"]))
    return Duplicates(near.bound, threshold is None, pairs, near.search, len(rows), near.dimension)


def near_by_ratio(z: np.ndarray, brute: bool, seed: int = 0) -> Near:
    """Rows of unit rows ``z`` flagged by the ratio test, with their nearest row. Without brute force the
    intrinsic dimension comes from SAMPLE rows' exact neighbours, and a row can only be flagged if a row lies
    within the bound times an upper bound on its second distance: ``search.within`` finds every such row
    exactly, and their exact neighbours decide."""
    n = len(z)
    if not brute:
        sample = np.sort(np.random.default_rng(seed).choice(n, min(n, SAMPLE), replace=False))
        bound, dimension = ratio_bound(distance_ratio(search.neighbours(z, 2, sample)[0]), tested=n)
        projected = _principal(z)
        radius2 = bound ** 2 * search.second_distance_bound(z, projected[:, :search.BOUND_AXES], seed)
        found = search.within(z, radius2, projected, sample)
        if found is not None:
            candidates = np.unique(found[0])
            sims, idx = search.neighbours(z, 2, candidates)
            flagged = np.flatnonzero(distance_ratio(sims) <= bound)
            return Near([(candidates[a], idx[a, 0], sims[a, 0]) for a in flagged], bound,
                        f"exact: every row within its test radius on {found[3]} principal axes, {len(candidates):,} "
                        f"checked in full; intrinsic dimension from {len(sample):,} sampled rows", dimension)
    sims, idx = search.neighbours(z, 2)
    ratio = distance_ratio(sims)
    bound, dimension = ratio_bound(ratio)
    return Near([(a, idx[a, 0], sims[a, 0]) for a in np.flatnonzero(ratio <= bound)], bound, "exact", dimension)


def near_by_cosine(z: np.ndarray, threshold: float, brute: bool, seed: int = 0) -> Near:
    """Each row's up to K nearest rows with cosine >= ``threshold`` (as brute force lists them either way)."""
    if not brute:
        sample = np.random.default_rng(seed).choice(len(z), min(len(z), SAMPLE), replace=False)
        found = search.within(z, np.full(len(z), 2.0 - 2.0 * threshold), _principal(z), sample)
        if found is not None:
            i, j, cos, axes = found
            order = np.lexsort((-cos, i))                             # by row, nearest first
            i, j, cos = i[order], j[order], cos[order]
            keep = (np.arange(len(i)) - np.searchsorted(i, i) < K) & (cos >= threshold)   # its place in the row
            return Near(list(zip(i[keep], j[keep], cos[keep])), threshold,
                        f"exact: every pair within the threshold on {axes} principal axes checked in full")
    sims, idx = search.neighbours(z, K)
    hits = zip(*np.nonzero((sims >= threshold) & (idx >= 0)))
    return Near([(a, idx[a, j], sims[a, j]) for a, j in hits], threshold, "exact")


def _principal(z: np.ndarray) -> np.ndarray:
    """Scores on the most principal axes the radius scan may use (float32; the scan takes leading columns)."""
    from embedkit.audit.distribution import principal_scores

    return principal_scores(z, min(max(search.AXES), z.shape[1]), dtype=np.float32)[0]


def _copies(ids: list[str], store_rows: np.ndarray) -> tuple[list[tuple[str, str]], np.ndarray]:
    """(first, later) image id pairs of one content (one row of the image-keyed store), and which rows are the
    first of their content (copies add no neighbours)."""
    groups: dict[int, list[int]] = {}
    for row, key in enumerate(store_rows.tolist()):
        groups.setdefault(key, []).append(row)
    unique = np.zeros(len(ids), dtype=bool)
    unique[[m[0] for m in groups.values()]] = True
    return [(ids[m[0]], ids[r]) for m in groups.values() for r in m[1:]], unique


def _pairs(manifest: Manifest, found: list[tuple]) -> list[dict]:
    """One row per (kind, image a, image b, cosine), each unordered pair once, with both images' split and patient."""
    t = manifest.table
    by_id = dict(zip(t["image_id"].tolist(), zip(t["split"].tolist(), t["patient_id"].tolist())))
    pairs, seen = [], set()
    for kind, a, b, cos in found:
        if (a, b) in seen or (b, a) in seen:
            continue
        seen.add((a, b))
        (sa, pa), (sb, pb) = by_id[a], by_id[b]
        pairs.append({"kind": kind, "image_a": a, "image_b": b, "split_a": sa, "split_b": sb,
                      "patient_a": pa, "patient_b": pb, "cosine": round(float(cos), 6)})
    return pairs
