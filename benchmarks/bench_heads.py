"""Cache-path experiments: the whole probe grid, thread settings, and the cost of re-encoding instead."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common import child


def _synthetic_caches(tmp: Path) -> list[Path]:
    """Five 1,200-image stores shaped like the study's (D = 512, GLoRIA 768), 6 classes, 7:1:2, each
    with its manifest beside it."""
    from common import synthetic_store

    paths = []
    for m, d in (("clip", 512), ("biomedclip", 512), ("medclip-vit", 512), ("medclip-rn50", 512), ("gloria", 768)):
        rng = np.random.default_rng(len(paths))
        y = np.arange(1200) % 6
        x = (rng.normal(size=(6, d))[y] * 0.3 + rng.normal(size=(1200, d))).astype(np.float32)
        split = np.array((["train"] * 7 + ["val"] + ["test"] * 2) * 120)
        paths.append(synthetic_store(tmp / f"{m}.h5", x, [f"c{i}" for i in y], list(split),
                                     [f"c{i}" for i in range(6)], model=m))
    return paths


def probe_grid(threads: int) -> dict:
    """5 models x {linear, mlp, knn} x 5 seeds x 150 epochs on 1,200 samples, with the default sweeps."""
    return child(f"""
import tempfile, time
from pathlib import Path
import sys; sys.path.insert(0, "benchmarks")
from bench_heads import _synthetic_caches
from embedkit.heads.runner import ExperimentConfig, run_experiment
tmp = Path(tempfile.mkdtemp())
caches = _synthetic_caches(tmp)
times = {{}}
t_all = time.perf_counter()
for cache in caches:
    for method in ("linear", "mlp", "knn"):
        t0 = time.perf_counter()
        run_experiment(ExperimentConfig(model=cache.stem, manifest=cache.with_suffix(".csv"), method=method, cache=cache,
                                        runs_dir=tmp / "runs", dataset="bench", seeds=(0, 1, 2, 3, 4), threads={threads},
                                        n_boot=1000))
        times[method] = times.get(method, 0) + time.perf_counter() - t0
RESULT = dict(threads={threads}, total_s=time.perf_counter() - t_all, **{{f"{{k}}_s": v for k, v in times.items()}})
""", env={"OMP_NUM_THREADS": str(threads)})


def reencode_cost(n_images: int = 16) -> dict:
    """Seconds per image of a full-size CLIP forward on CPU, to price a probe that re-encodes every epoch."""
    return child(f"""
import time, torch
from benchmarks.common import full_encoder
enc = full_encoder("clip"); enc.image_tower.eval()
x = torch.randn({n_images}, 3, 224, 224)
with torch.inference_mode():
    enc.encode_images(x[:2])
    t0 = time.perf_counter()
    for i in range(0, {n_images}, 8):
        enc.encode_images(x[i:i + 8])
RESULT = dict(seconds_per_image=(time.perf_counter() - t0) / {n_images})
""")
