"""The audit's cost: exact, reduced and approximate neighbour searches at 100,000 rows, and a whole audit."""

from __future__ import annotations

import time

import numpy as np

from common import cpu_model, synthetic_store


def clustered(n: int, d: int = 512, copies: int = 100, seed: int = 0):
    """Rows on a 32-dimensional manifold plus noise (an encoder's embeddings are far from isotropic), with
    ``copies`` near copies planted (the original plus 1 % noise); returns the rows and the planted pairs."""
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, 32)) @ rng.normal(size=(32, d)) + 0.5 * rng.normal(size=(n, d))).astype(np.float32)
    originals = rng.choice(n - copies, copies, replace=False)
    x[n - copies:] = x[originals] + 0.01 * x.std() * rng.normal(size=(copies, d))
    return x, {frozenset((int(a), n - copies + i)) for i, a in enumerate(originals)}


def ann_vs_exact(n: int = 100_000, d: int = 512) -> dict:
    """The audit's near-copy search at ``n`` rows — brute force, and the radius scan it uses above EXACT_BELOW —
    beside two approximate indexes measured and not chosen (IVF-Flat with √N cells, 16 probed; HNSW, 32 links,
    efSearch 64): time, planted near copies found and pairs flagged by the family-wise ratio test, whether they
    are brute force's pairs, and for the indexes recall@1 against brute force (over all rows, and over the rows
    whose nearest neighbour is unusually near but not flagged: distance ratio between the test's bound and 0.8)."""
    from embedkit.audit import search

    with search.search_threads(1):                  # faiss and numpy's BLAS alike
        return _searches(n, d)


def _searches(n: int, d: int) -> dict:
    import faiss

    from embedkit.audit import search
    from embedkit.audit.duplicates import distance_ratio, near_by_ratio, normalised, ratio_bound

    x, planted = clustered(n, d)
    z = normalised(x)

    def listed(index, label):
        index.add(z)
        return (*search._drop_self(*index.search(z, 3), np.arange(n)), label)

    def ivf():
        cells = int(np.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, cells, faiss.METRIC_INNER_PRODUCT)
        index.train(z[np.sort(np.random.default_rng(0).choice(n, min(n, 64 * cells), replace=False))])
        index.nprobe = 16
        return listed(index, f"IVF-Flat ({cells} cells, 16 probed)")

    def hnsw():
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 64
        return listed(index, "HNSW (32 links, efSearch 64)")

    out = {"n": n, "d": d, "planted": len(planted), "searches": {}, "cpu": cpu_model(), "date": time.strftime("%Y-%m-%d")}
    t0 = time.perf_counter()
    sims, idx = search.neighbours(z, 2)
    seconds = time.perf_counter() - t0
    ratio = distance_ratio(sims)
    truth = {"top": sims[:, 0], "pairs": _flagged(ratio, idx, ratio_bound(ratio)[0])}
    truth["close"] = (ratio > ratio_bound(ratio)[0]) & (ratio < 0.8)
    out["searches"]["exact"] = _row("brute force (faiss, inner product)", seconds, truth["pairs"], planted, truth)
    t0 = time.perf_counter()
    near = near_by_ratio(z, brute=False)
    seconds = time.perf_counter() - t0
    out["searches"]["scan"] = _row(f"the audit's: {near.search}", seconds,
                                   {frozenset((int(a), int(b))) for a, b, _ in near.pairs}, planted, truth)
    for name, index in (("ivf", ivf), ("hnsw", hnsw)):
        t0 = time.perf_counter()
        sims, idx, label = index()
        seconds = time.perf_counter() - t0
        ratio = distance_ratio(sims)
        out["searches"][name] = _row(label, seconds, _flagged(ratio, idx, ratio_bound(ratio)[0]), planted, truth)
        found = sims[:, 0] >= truth["top"] - 1e-6
        out["searches"][name] |= {"recall_at_1": float(np.mean(found)), "recall_close": float(np.mean(found[truth["close"]]))}
    out["close"] = int(truth["close"].sum())
    return out


def _flagged(ratio: np.ndarray, idx: np.ndarray, bound: float) -> set:
    return {frozenset((int(a), int(idx[a, 0]))) for a in np.flatnonzero(ratio <= bound)}


def _row(label: str, seconds: float, pairs: set, planted: set, truth: dict) -> dict:
    return {"label": label, "seconds": seconds, "found": len(planted & pairs), "flagged": len(pairs),
            "same_flags": pairs == truth["pairs"], "recall_at_1": None, "recall_close": None}


def full_audit(n_per_group: int = 25, rows: int | None = None) -> dict:
    """A whole audit (probes, duplicates, map) of a clip-tiny store: the demo's phantom, or ``rows``
    synthetic rows of 512-d embeddings."""
    import tempfile
    from pathlib import Path

    from embedkit.audit import AuditConfig, run_audit

    tmp = Path(tempfile.mkdtemp())
    if rows is None:
        from embedkit.cache.extract import ExtractConfig, extract
        from embedkit.data.phantom import PhantomSpec, make_phantom

        manifest = make_phantom(tmp / "p", PhantomSpec(per_group=n_per_group, size=64, seed=0, duplicates=2))
        cache = extract(ExtractConfig(manifest=manifest, models=("clip-tiny",), cache_dir=tmp / "c", workers=0))[0].path
    else:
        rng = np.random.default_rng(0)
        y = np.arange(rows) % 6
        x = (rng.normal(size=(6, 512))[y] * 0.3 + rng.normal(size=(rows, 512))).astype(np.float32)
        split = np.array((["train"] * 7 + ["val"] + ["test"] * 2) * (rows // 10))
        cache = synthetic_store(tmp / "s.h5", x, [f"c{i}" for i in y], list(split), [f"c{i}" for i in range(6)],
                                model="clip-tiny")
        manifest = cache.with_suffix(".csv")
    t0 = time.perf_counter()
    s = run_audit(AuditConfig(model="clip-tiny", manifest=manifest, cache=cache, runs_dir=tmp / "r", n_boot=1000,
                              n_perm=1000, solver="adamw" if rows is None else "lbfgs"))
    return {"rows": rows or 24 * n_per_group + 2, "seconds": time.perf_counter() - t0, "exact": s["duplicates"]["exact"]}
