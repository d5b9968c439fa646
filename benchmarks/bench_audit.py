"""The audit's cost: nearest-neighbour search (faiss vs torch top-k) and a whole audit at 100,000 rows."""

from __future__ import annotations

import time

import numpy as np


def _torch_neighbours(z: np.ndarray, k: int, block: int = 4096):
    import torch

    t = torch.from_numpy(z)
    sims, idx = [], []
    for s in range(0, len(t), block):
        v, i = torch.topk(t[s:s + block] @ t.T, k + 1, dim=1)
        sims.append(v[:, 1:].numpy())
        idx.append(i[:, 1:].numpy())
    return np.concatenate(sims), np.concatenate(idx)


def neighbour_search(n: int = 20_000, d: int = 512, k: int = 5) -> dict:
    """Exact top-k cosine neighbours of ``n`` normalised rows: faiss IndexFlatIP against torch matmul + topk."""
    from embedkit.audit.duplicates import neighbours

    x = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
    t0 = time.perf_counter()
    fs, fi = neighbours(x, k)
    faiss_s = time.perf_counter() - t0
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    t0 = time.perf_counter()
    ts, ti = _torch_neighbours(z, k)
    torch_s = time.perf_counter() - t0
    return {"n": n, "d": d, "faiss_s": faiss_s, "torch_s": torch_s,
            "same_neighbours": float((fi[:, 0] == ti[:, 0]).mean())}


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
                              n_perm=1000))
    return {"rows": rows or 24 * n_per_group + 2, "seconds": time.perf_counter() - t0, "exact": s["duplicates"]["exact"]}
