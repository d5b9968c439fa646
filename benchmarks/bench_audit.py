"""The audit's cost: approximate against exact neighbour search at 100,000 rows, and a whole audit."""

from __future__ import annotations

import time

import numpy as np


def clustered(n: int, d: int = 512, copies: int = 100, seed: int = 0):
    """Rows on a 32-dimensional manifold plus noise (an encoder's embeddings are far from isotropic), with
    ``copies`` near copies planted (the original plus 1 % noise); returns the rows and the planted pairs."""
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, 32)) @ rng.normal(size=(32, d)) + 0.5 * rng.normal(size=(n, d))).astype(np.float32)
    originals = rng.choice(n - copies, copies, replace=False)
    x[n - copies:] = x[originals] + 0.01 * x.std() * rng.normal(size=(copies, d))
    return x, {frozenset((int(a), n - copies + i)) for i, a in enumerate(originals)}


def ann_vs_exact(n: int = 100_000, d: int = 512) -> dict:
    """The audit's neighbour search at ``n`` rows: exact (faiss IndexFlatIP) against IVF-Flat at the audit's
    settings; recall@1 of IVF against exact, and the planted near copies each finds with the calibrated ratio."""
    import faiss

    from embedkit.audit.duplicates import calibrated_ratio, distance_ratio, neighbours, normalised

    faiss.omp_set_num_threads(1)
    x, planted = clustered(n, d)
    z = normalised(x)
    out = {"n": n, "d": d, "planted": len(planted)}
    found = {}
    for name, exact in (("exact", True), ("ivf", False)):
        t0 = time.perf_counter()
        sims, idx, search = neighbours(z, exact=exact)
        out[f"{name}_s"] = time.perf_counter() - t0
        ratio = distance_ratio(sims)
        near = {frozenset((int(a), int(idx[a, 0]))) for a in np.flatnonzero(ratio <= calibrated_ratio(ratio))}
        out[f"{name}_found"], out[f"{name}_flagged"] = len(planted & near), len(near)
        found[name] = idx[:, 0]
        out[f"{name}_search"] = search
    out["recall_at_1"] = float(np.mean(found["ivf"] == found["exact"]))
    return out


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
        import sys

        sys.path.insert(0, str(Path(__file__).parent))
        from common import synthetic_store

        rng = np.random.default_rng(0)
        y = np.arange(rows) % 6
        x = (rng.normal(size=(6, 512))[y] * 0.3 + rng.normal(size=(rows, 512))).astype(np.float32)
        split = np.array((["train"] * 7 + ["val"] + ["test"] * 2) * (rows // 10))
        cache = synthetic_store(tmp / "s.h5", x, [f"c{i}" for i in y], list(split), [f"c{i}" for i in range(6)])
        manifest = cache.with_suffix(".csv")
    t0 = time.perf_counter()
    s = run_audit(AuditConfig(model="clip-tiny", manifest=manifest, cache=cache, runs_dir=tmp / "r", n_boot=1000,
                              n_perm=1000, solver="adamw" if rows is None else "lbfgs"))
    return {"rows": rows or 24 * n_per_group + 2, "seconds": time.perf_counter() - t0, "exact": s["duplicates"]["exact"]}
