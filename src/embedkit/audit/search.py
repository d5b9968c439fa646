"""Exact neighbour search for the duplicate audit, on centred unit rows ``z`` (float32, C order).

Brute force (faiss, inner product) answers "each row's k nearest rows" below ``EXACT_BELOW`` rows. Above it the
audit asks a narrower question — which rows have another row within a radius of their own (the near-copy
test's radius, or a cosine threshold's) — and ``within`` answers it exactly at a fraction of the cost: a scan of
all pairs on the leading principal axes, where a pair's distance is at most its full one (orthonormal
projection only shortens distances), keeps every pair that could lie within a radius, and the few it keeps are
measured in full. It takes the fewest of ``AXES`` on which a sample of rows finds at most ``PAIRS_PER_ROW``
rows within its radius, and declines (None) where none does — embeddings whose distances do not live on a few
axes, where brute force is no dearer. The scan is one small GEMM per pair of row blocks, upper triangle only,
in torch; docs/benchmarks.md compares it with brute force, IVF-Flat and HNSW at 100,000 rows.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

EXACT_BELOW = 50_000       # rows; from here the radius scan (brute force: ~40 s at 50,000 rows, growing as N²)
AXES = (32, 64)            # principal axes the radius scan may compare pairs on, fewest first
PAIRS_PER_ROW = 8          # most rows within a row's radius on the axes, on average over a sample, to scan
QUERY_BLOCK, DATA_BLOCK = 512, 2048     # rows per block of the scan: 4 MiB of distances (six shapes from 1 to
                                        # 16 MiB measured 2.4-4.4 ns a pair, one thread; larger were not faster)
SECOND_CELLS_PER_ROW = 1 / 256          # IVF cells for the upper bound on each row's second distance (√N-ish)
BLAS_BLOCK = 1024          # query and database rows per faiss distance block (faiss's default 4,096 × 1,024 was
                           # 1.3x slower in the 64-d scan, one thread)
MARGIN = 1e-4              # squared distance added to every radius on the axes (float32 rounding)


def neighbours(z: np.ndarray, k: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(cosines, indices) of the ``k`` nearest other rows of each of ``rows`` (default: all), by brute force
    (no index: no copy of z)."""
    import faiss

    queries = z if rows is None else z[rows]
    with _blocks():
        sims, idx = faiss.knn(queries, z, min(k + 1, len(z)), metric=faiss.METRIC_INNER_PRODUCT)
    return _drop_self(sims, idx, np.arange(len(z)) if rows is None else rows)


def within(z: np.ndarray, radius2: np.ndarray, projected: np.ndarray,
           sample: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
    """(i, j, cosine, axes) of every ordered pair of distinct rows whose squared distance is at most
    ``radius2[i]``, exactly: pairs near enough on the fewest leading ``projected`` axes that keep the ``sample``
    rows' pairs few, then measured in full; None where no number of AXES does."""
    reach = radius2 + MARGIN
    for axes in [a for a in AXES if a <= projected.shape[1]] or [projected.shape[1]]:
        p = np.ascontiguousarray(projected[:, :axes])
        if _pairs_per_row(p, reach, sample) <= PAIRS_PER_ROW:
            break
    else:
        return None
    i, j = _scan(p, reach)
    cos = np.empty(len(i), dtype=np.float32)
    for s in range(0, len(i), 65536):
        cos[s:s + 65536] = np.einsum("nd,nd->n", z[i[s:s + 65536]], z[j[s:s + 65536]])
    d2 = 2 - 2 * cos.astype(np.float64)
    fwd, back = d2 <= radius2[i], d2 <= radius2[j]
    return (np.concatenate([i[fwd], j[back]]), np.concatenate([j[fwd], i[back]]),
            np.concatenate([cos[fwd], cos[back]]), axes)


def _pairs_per_row(p: np.ndarray, radius2: np.ndarray, sample: np.ndarray) -> float:
    """Mean number of other rows within each ``sample`` row's radius on the axes ``p``."""
    sq = np.einsum("nd,nd->n", p, p)
    limit = (radius2[sample] - sq[sample])[:, None]
    count = 0
    for s in range(0, len(p), 16384):
        count += int(np.count_nonzero(sq[s:s + 16384] - 2 * (p[sample] @ p[s:s + 16384].T) <= limit))
    return (count - len(sample)) / len(sample)                  # each row lies within its own radius


def second_distance_bound(z: np.ndarray, projected: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N,) squared full distance from each row to the second of a few candidate rows from an IVF index on the
    axes: an upper bound on its distance to its true second-nearest row (4, the largest, where none is found)."""
    import faiss

    projected = np.ascontiguousarray(projected)                  # one copy, not one per faiss call
    n, r = projected.shape
    cells = max(1, int(n * SECOND_CELLS_PER_ROW))
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(r), r, cells)
    index.train(projected[np.random.default_rng(seed).choice(n, min(n, 64 * cells), replace=False)])
    index.add(projected)
    index.nprobe = 4
    _, cand = index.search(projected, 9)
    sims = np.empty(cand.shape, dtype=np.float32)
    for s in range(0, n, 4096):
        sims[s:s + 4096] = np.einsum("nd,nkd->nk", z[s:s + 4096], z[cand[s:s + 4096]])
    sims[(cand == np.arange(n)[:, None]) | (cand < 0)] = -np.inf
    second = -np.partition(-sims, 1, axis=1)[:, 1].astype(np.float64)
    return np.where(np.isfinite(second), 2 - 2 * second, 4.0)


def _scan(p: np.ndarray, radius2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j), i < j, each unordered pair once, whose squared distance on the axes ``p`` is at most
    radius2[i] or radius2[j]: each block pair of the upper triangle as one GEMM of [p, 1] and [-2p, |p|²]ᵀ,
    compared with a threshold per row."""
    import torch

    sq = np.einsum("nd,nd->n", p.astype(np.float64), p.astype(np.float64))
    left = torch.from_numpy(np.hstack([p, np.ones((len(p), 1), np.float32)]))
    right = torch.from_numpy(np.hstack([-2 * p, sq[:, None].astype(np.float32)]).T.copy())
    radius, own = torch.from_numpy(radius2.astype(np.float32)), torch.from_numpy(sq.astype(np.float32))
    found_i, found_j = [], []
    for s in range(0, len(p), QUERY_BLOCK):
        rows = slice(s, s + QUERY_BLOCK)
        for t in range(s - s % DATA_BLOCK, len(p), DATA_BLOCK):
            # sq_j - 2 p_i·p_j, within the larger of the two rows' radii less sq_i
            limit = torch.clamp(radius[rows], min=radius[t:t + DATA_BLOCK].max()) - own[rows]
            e = left[rows] @ right[:, t:t + DATA_BLOCK]
            li, lj = (e <= limit[:, None]).nonzero(as_tuple=True)
            i, j = li + s, lj + t                     # the diagonal blocks list a pair twice, and each row itself
            keep = (i < j) & (e[li, lj] + own[i] <= torch.maximum(radius[i], radius[j]))
            found_i.append(i[keep].numpy().astype(np.int32))
            found_j.append(j[keep].numpy().astype(np.int32))
    return np.concatenate(found_i).astype(np.int64), np.concatenate(found_j).astype(np.int64)


@contextmanager
def faiss_threads(n: int):
    """Run a block with faiss (OpenMP) on ``n`` threads, its own number restored after."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


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


def _drop_self(sims: np.ndarray, idx: np.ndarray, rows: np.ndarray):
    """Each row's neighbours without itself (``rows``: the queries' own indices; a copy may be listed first)."""
    own = idx == rows[:, None]
    own[~own.any(1), -1] = True                      # not found: drop the farthest instead
    keep = ~own
    k = sims.shape[1] - 1
    return sims[keep].reshape(-1, k), idx[keep].reshape(-1, k)
