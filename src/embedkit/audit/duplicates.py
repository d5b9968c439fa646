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

Neighbours are exact, from faiss: brute force below ``EXACT_BELOW`` rows; above, each row's ``CANDIDATES``
nearest rows on the leading ``REDUCED_DIMS`` principal axes, re-ranked by their full cosine, with a proof per
row that no other row is nearer (projection only shortens distances), and brute force for the rows without
one (docs/benchmarks.md compares exact, reduced, IVF-Flat and HNSW at 100,000 rows).
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from embedkit.cache.layout import Cache
from embedkit.manifest import Manifest

K = 5                      # neighbours looked at per image
EXACT_BELOW = 50_000       # rows; from here the reduced search (exact: ~40 s at 50,000 rows, growing as N²)
REDUCED_DIMS = 64          # principal axes the reduced search ranks candidates on
CANDIDATES = 16            # candidates per row re-ranked by full cosine
PROOF_MARGIN = 1e-4        # squared distance by which the last candidate must lie beyond (float32 rounding)
BLAS_BLOCK = 1024          # query and database rows per faiss distance block: 4 MiB of distances stay in cache
                           # for the top-k selection (faiss's default 4,096 × 1,024 was 1.3x slower, 64-d, one thread)
ALPHA = 0.05               # family-wise error of the near-copy flags over all rows searched


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


def normalised(x: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Centred, unit-length ``rows`` of ``x`` (default: all) as a new contiguous float32 array (faiss's input),
    made in place in that one copy."""
    x = np.asarray(x)
    z = np.array(x, dtype=np.float32, order="C") if rows is None else np.ascontiguousarray(x[rows], dtype=np.float32)
    z -= z.mean(0, dtype=np.float64).astype(np.float32)
    z /= np.linalg.norm(z, axis=1, keepdims=True).clip(1e-12)
    return z


def neighbours(z: np.ndarray, k: int = K, *, exact: bool | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """(cosines, indices, search) of each row's ``k`` nearest other rows of unit rows ``z``, exact either way:
    brute force below EXACT_BELOW rows (or when ``exact``); above, the reduced search, whose lists are proven
    complete row by row and searched again by brute force where they are not."""
    n, d = z.shape
    if exact if exact is not None else n < EXACT_BELOW:
        return (*_brute(z, np.arange(n), k), "exact")
    sims, idx, proven = _reduced(z, k)
    redo = np.flatnonzero(~proven)
    if len(redo):
        sims[redo], idx[redo] = _brute(z, redo, k)
    return sims, idx, (f"exact: {CANDIDATES} candidates on {min(REDUCED_DIMS, d)} principal axes, proven complete "
                       f"for {proven.mean():.1%} of rows, the other {len(redo):,} searched in full")


def _brute(z: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product neighbours of ``rows`` among all rows (no index: no copy of z)."""
    import faiss

    with _blocks():
        sims, idx = faiss.knn(z if len(rows) == len(z) else z[rows], z, min(k + 1, len(z)),
                              metric=faiss.METRIC_INNER_PRODUCT)
    return _drop_self(sims, idx, rows)


def _reduced(z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates by exact search on the leading principal axes, re-ranked by their full cosine, and which rows'
    top ``k`` are proven among them: projecting onto orthonormal axes only shortens distances, so a row whose
    last candidate lies farther on the axes than its k-th re-ranked neighbour lies in full has no closer row
    outside its candidates."""
    import faiss

    from embedkit.audit.distribution import principal_scores

    n, d = z.shape
    r, c = min(REDUCED_DIMS, d), min(CANDIDATES + 1, n)
    projected = principal_scores(z, r, dtype=np.float32)[0]
    with _blocks():
        reach, cand = faiss.knn(projected, projected, c)          # squared distances on the axes, self included
    del projected
    sims = np.empty(cand.shape, dtype=np.float32)
    for s in range(0, n, 1024):                                   # full cosines of each row's candidates
        sims[s:s + 1024] = np.einsum("nd,nkd->nk", z[s:s + 1024], z[cand[s:s + 1024]])
    sims[(cand == np.arange(n)[:, None]) | (cand < 0)] = -np.inf
    k = min(k, n - 1)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    sims, idx = np.take_along_axis(sims, order, 1), np.take_along_axis(cand, order, 1)
    proven = reach[:, -1] > 2 - 2 * sims[:, -1].astype(np.float64) + PROOF_MARGIN
    return sims, idx, proven


@contextmanager
def _blocks():
    """faiss's brute-force search with BLAS_BLOCK-row distance blocks, its own block sizes restored after."""
    import faiss

    saved = faiss.cvar.distance_compute_blas_query_bs, faiss.cvar.distance_compute_blas_database_bs
    faiss.cvar.distance_compute_blas_query_bs = faiss.cvar.distance_compute_blas_database_bs = BLAS_BLOCK
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_query_bs, faiss.cvar.distance_compute_blas_database_bs = saved


def _drop_self(sims: np.ndarray, idx: np.ndarray, rows: np.ndarray | None = None):
    """Each row's neighbours without itself (``rows``: the queries' own indices; a copy may be listed first)."""
    own = idx == (np.arange(len(idx)) if rows is None else rows)[:, None]
    own[~own.any(1), -1] = True                      # not found: drop the farthest instead
    keep = ~own
    k = sims.shape[1] - 1
    return sims[keep].reshape(-1, k), idx[keep].reshape(-1, k)


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


def find(view: Cache, manifest: Manifest, *, threshold: float | None = None, exact: bool | None = None) -> Duplicates:
    """Exact copies (same content key) and near copies (calibrated ratio, or cosine >= ``threshold``) among the
    rows of a joined ``view`` of ``manifest``."""
    ids = [str(i) for i in view.image_id]
    copies, unique = _copies(ids, view.store_rows)
    found = [("exact", a, b, 1.0) for a, b in copies]
    if unique.sum() < 3:
        return Duplicates(threshold or 1.0, threshold is None, _pairs(manifest, found))
    rows = np.flatnonzero(unique)
    sims, idx, search = neighbours(normalised(view.embeddings, None if unique.all() else rows), exact=exact)
    dimension = None
    if threshold is None:
        ratio = distance_ratio(sims)
        bound, dimension = ratio_bound(ratio)
        hits = [(a, 0) for a in np.flatnonzero(ratio <= bound)]
    else:
        bound = threshold
        hits = [(a, j) for a, j in zip(*np.nonzero(sims >= threshold))]
    found += [("near", ids[rows[a]], ids[rows[idx[a, j]]], sims[a, j]) for a, j in hits if idx[a, j] >= 0]
    pairs = _pairs(manifest, found)
    pairs.sort(key=lambda p: (p["kind"] != "exact", -p["cosine"]))
    return Duplicates(bound, threshold is None, pairs, search, len(rows), dimension)


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
