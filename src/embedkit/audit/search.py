"""Exact neighbour search for the duplicate audit, on centred unit rows ``z`` (float32, C order).

Brute force (faiss, inner product) answers "each row's k nearest rows" below ``EXACT_BELOW`` rows. Above it the
audit asks a narrower question — which rows have another row within a radius of their own (the near-copy
test's radius, or a cosine threshold's) — and ``within`` answers it exactly at a fraction of the cost: a scan of
all pairs on the leading principal axes, where a pair's distance is at most its full one (orthonormal
projection only shortens distances), keeps every pair that could lie within a radius, and the few it keeps are
measured in full. It takes the fewest of ``AXES`` on which a sample of rows finds at most ``PAIRS_PER_ROW``
rows within its radius, and declines (None) where none does — embeddings whose distances do not live on a few
axes, where brute force is no dearer. The scan is one small GEMM per pair of row blocks, upper triangle only,
in numpy (at 100,000 rows, one thread, 12.8-13.8 s against 24.5 s in torch, whose MKL ran these shapes slowly on
this machine's AMD cores); docs/benchmarks.md compares it with brute force, IVF-Flat and HNSW at 100,000 rows.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np

EXACT_BELOW = 50_000       # rows; from here the radius scan (brute force: ~40 s at 50,000 rows, growing as N²)
AXES = (24, 32, 64)        # principal axes the radius scan may compare pairs on, fewest first (at 100,000 rows
                           # on a 32-d manifold, one thread: 24 axes 11.0 s, 32 axes 13.3 s; 20 no faster)
BOUND_AXES = 32            # principal axes of the IVF index behind each row's second-distance bound
PAIRS_PER_ROW = 8          # most rows within a row's radius on the axes, on average over a sample, to scan
QUERY_BLOCK, DATA_BLOCK = 256, 1024     # rows per block of the scan: 1 MiB of distances (measured at 100,000
                                        # rows on 32 axes, one thread: 12.8-13.8 s; 512 x 2048 14.8-15.2, five
                                        # other shapes 13.3-14.5)
SECOND_CELLS_PER_ROW = 1 / 256          # IVF cells for the upper bound on each row's second distance (√N-ish)
FEW_QUERIES = 500          # up to this many query rows, blocks of numpy products find neighbours (measured at
                           # 100,000 rows, one thread: 200 queries 0.8 s against faiss's 3.5; 2,000: 7.7 against 6.1)
TOP_BLOCK = 8192           # rows of z per product of the few-query search
BLAS_BLOCK = 1024          # query and database rows per faiss distance block (faiss's default 4,096 × 1,024 was
                           # 1.3x slower in the 64-d scan, one thread)
_THREADS = ContextVar("search_threads", default=1)     # the scan's threads, set by search_threads
MARGIN = 1e-4              # squared distance added to every radius on the axes (float32 rounding)


def neighbours(z: np.ndarray, k: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(cosines, indices) of the ``k`` nearest other rows of each of ``rows`` (default: all), by brute force
    (no index: no copy of z): faiss's, or for at most FEW_QUERIES rows blocks of numpy products."""
    queries = z if rows is None else z[rows]
    if len(queries) <= FEW_QUERIES:
        sims, idx = _top(queries, z, min(k + 1, len(z)))
    else:
        import faiss

        with _blocks():
            sims, idx = faiss.knn(queries, z, min(k + 1, len(z)), metric=faiss.METRIC_INNER_PRODUCT)
    return _drop_self(sims, idx, np.arange(len(z)) if rows is None else rows)


def _top(queries: np.ndarray, z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(inner products, indices) of each query's ``k`` largest inner products with the rows of ``z``, largest
    first, from one product per block of TOP_BLOCK rows, each block's best merged into the running best."""
    best = np.full((len(queries), k), -np.inf, np.float32)
    where = np.full((len(queries), k), -1, np.int64)
    for t in range(0, len(z), TOP_BLOCK):
        sims = queries @ z[t:t + TOP_BLOCK].T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if sims.shape[1] > k else \
            np.broadcast_to(np.arange(sims.shape[1]), (len(queries), sims.shape[1]))
        sims, at = np.hstack([best, np.take_along_axis(sims, top, 1)]), np.hstack([where, top + t])
        keep = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        best, where = np.take_along_axis(sims, keep, 1), np.take_along_axis(at, keep, 1)
    order = np.argsort(-best, axis=1, kind="stable")
    return np.take_along_axis(best, order, 1), np.take_along_axis(where, order, 1)


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
    radius2[i] or radius2[j]: each block pair of the upper triangle as one GEMM of [p, 1] and [-2p, |p|²]ᵀ, whose
    rows are looked into only where their least entry is within the row's loosest limit (pairs are rare); blocks
    of query rows side by side on ``search_threads``' threads."""
    from embedkit.metrics.resample import map_blocks

    sq = np.einsum("nd,nd->n", p.astype(np.float64), p.astype(np.float64))
    operands = _Operands(np.hstack([p, np.ones((len(p), 1), np.float32)]),
                         np.hstack([-2 * p, sq[:, None].astype(np.float32)]).T.copy(),
                         radius2.astype(np.float32), sq.astype(np.float32))
    parts = map_blocks(operands.pairs, range(0, len(p), QUERY_BLOCK), _THREADS.get())
    return np.concatenate([i for i, _ in parts]), np.concatenate([j for _, j in parts])


@dataclass(frozen=True)
class _Operands:
    """The scan's operands: [p, 1], [-2p, |p|²]ᵀ, the radii and |p|² (float32)."""
    left: np.ndarray
    right: np.ndarray
    radius: np.ndarray
    own: np.ndarray

    def pairs(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        """The scan's pairs (i, j), i < j, of the QUERY_BLOCK rows from ``s``."""
        q, radius, own = slice(s, s + QUERY_BLOCK), self.radius, self.own
        buffer = np.empty((QUERY_BLOCK, DATA_BLOCK), np.float32)
        found_i, found_j = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for t in range(s - s % DATA_BLOCK, len(own), DATA_BLOCK):
            d = slice(t, t + DATA_BLOCK)
            e = _product(self.left[q], self.right[:, d], buffer)         # sq_j - 2 p_i·p_j
            loosest = np.maximum(radius[q], radius[d].max()) - own[q]
            rows = s + np.flatnonzero(e.min(1) <= loosest)
            if len(rows):
                li, lj = np.nonzero(e[rows - s] + own[rows, None] <= np.maximum(radius[rows, None], radius[None, d]))
                i, j = rows[li], t + lj                   # the diagonal blocks list a pair twice, and each row itself
                found_i.append(i[i < j])
                found_j.append(j[i < j])
        return np.concatenate(found_i), np.concatenate(found_j)


def _product(a: np.ndarray, b: np.ndarray, buffer: np.ndarray) -> np.ndarray:
    """a @ b, into ``buffer`` where it has the shape (a new array at the edges)."""
    if (len(a), b.shape[1]) == buffer.shape:
        return np.matmul(a, b, out=buffer)
    return a @ b


@contextmanager
def search_threads(n: int | None):
    """Run a block with faiss (OpenMP), numpy's BLAS and the scan's blocks on ``n`` threads (None: one), their own
    numbers restored after."""
    import faiss
    from threadpoolctl import threadpool_limits

    n = n or 1
    before, token = faiss.omp_get_max_threads(), _THREADS.set(n)
    faiss.omp_set_num_threads(n)
    try:
        with threadpool_limits(n, user_api="blas"):
            yield
    finally:
        faiss.omp_set_num_threads(before)
        _THREADS.reset(token)


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
