"""Cache-path experiments: the whole probe grid (in one process, through the one CLI command, where its
time goes, and its FLOP bound measured in the same process), the stacked heads with written-out gradients
against the same members trained the plain torch way, and the cost of re-encoding instead."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common import child

MODELS = (("clip", 512), ("biomedclip", 512), ("medclip-vit", 512), ("medclip-rn50", 512), ("gloria", 768))
N_TRAIN, N_VAL, CLASSES, SEEDS, EPOCHS, HIDDEN = 840, 120, 6, 5, 150, 128


def grid_gflop() -> dict:
    """The GEMM work of the grid's linear and MLP heads (default sweeps: 4 and 2 points) per head kind:
    forward and weight gradient of every layer, the MLP's hidden gradient, and each epoch's validation."""
    def layer(n_in, n_out, members, grad_input=False):
        per_row = 2 * n_in * n_out * members
        return EPOCHS * (N_TRAIN * per_row * (3 if grad_input else 2) + N_VAL * per_row)

    linear = sum(layer(d, CLASSES, SEEDS * 4) for _, d in MODELS)
    mlp = sum(layer(d, HIDDEN, SEEDS * 2) + layer(HIDDEN, CLASSES, SEEDS * 2, grad_input=True) for _, d in MODELS)
    return {"linear": linear / 1e9, "mlp": mlp / 1e9}


def _synthetic_caches(tmp: Path) -> list[Path]:
    """Five 1,200-image stores shaped like the study's (D = 512, GLoRIA 768), 6 classes, 7:1:2, all of
    the same image files, each with the (identical) manifest beside it."""
    from common import synthetic_store

    paths = []
    for m, d in MODELS:
        rng = np.random.default_rng(len(paths))
        y = np.arange(1200) % 6
        x = (rng.normal(size=(6, d))[y] * 0.3 + rng.normal(size=(1200, d))).astype(np.float32)
        split = np.array((["train"] * 7 + ["val"] + ["test"] * 2) * 120)
        paths.append(synthetic_store(tmp / "cache" / f"{m}.h5", x, [f"c{i}" for i in y], list(split),
                                     [f"c{i}" for i in range(6)], model=m, images=tmp / "images"))
    return paths


def probe_grid(threads: int) -> dict:
    """5 models x {linear, mlp, knn} x 5 seeds x 150 epochs on 1,200 samples, default sweeps, in one
    process; the time split into loading the store, fitting, and metrics + run files."""
    return child(f"""
import tempfile, time
from pathlib import Path
import sys; sys.path.insert(0, "benchmarks")
from bench_heads import _synthetic_caches
from embedkit.heads import runner, features
from embedkit.heads.runner import ExperimentConfig, run_experiment
tmp = Path(tempfile.mkdtemp())
caches = _synthetic_caches(tmp)
spent = {{"load": 0.0, "finish": 0.0}}
def timed(name, fn):
    def wrapper(*a, **k):
        t0 = time.perf_counter(); out = fn(*a, **k); spent[name] += time.perf_counter() - t0; return out
    return wrapper
features.load = timed("load", features.load); runner.finish_run = timed("finish", runner.finish_run)
times = {{}}
t_all = time.perf_counter()
for cache in caches:
    for method in ("linear", "mlp", "knn"):
        t0 = time.perf_counter()
        run_experiment(ExperimentConfig(model=cache.stem, manifest=cache.with_suffix(".csv"), method=method, cache=cache,
                                        runs_dir=tmp / "runs", dataset="bench", seeds=(0, 1, 2, 3, 4), threads={threads},
                                        n_boot=1000))
        times[method] = times.get(method, 0) + time.perf_counter() - t0
total = time.perf_counter() - t_all
import torch
a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
a @ b
t0 = time.perf_counter()
for _ in range(5):
    a @ b
gemm_gflops = 5 * 2 * 2048 ** 3 / (time.perf_counter() - t0) / 1e9
RESULT = dict(threads={threads}, total_s=total, gemm_gflops=gemm_gflops, load_s=spent["load"], finish_s=spent["finish"],
              fit_s=total - spent["load"] - spent["finish"], **{{f"{{k}}_s": v for k, v in times.items()}})
""", env={"OMP_NUM_THREADS": str(threads)})


def cli_grid() -> dict:
    """The same grid as one command: `embedkit probe --model (5) --head linear,mlp,knn --seeds 0-4`."""
    return child("""
import os, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, "benchmarks")
from bench_heads import MODELS, _synthetic_caches
tmp = Path(tempfile.mkdtemp())
caches = _synthetic_caches(tmp)
cmd = [sys.executable, "-m", "embedkit", "probe", "--model", ",".join(m for m, _ in MODELS), "--head", "linear,mlp,knn",
       "--seeds", "0-4", "--manifest", str(caches[0].with_suffix(".csv")), "--cache-dir", str(tmp / "cache"),
       "--runs-dir", str(tmp / "runs"), "--dataset", "bench"]
t0 = time.perf_counter()
out = subprocess.run(cmd, capture_output=True, text=True)
assert out.returncode == 0, out.stderr[-2000:]
RESULT = dict(seconds=time.perf_counter() - t0, runs=len(list((tmp / "runs").rglob("run.json"))))
""", env={"OMP_NUM_THREADS": "1"})


def written_vs_autograd(kind: str) -> dict:
    """train_heads (stacked, gradients written out, fused AdamW per sweep point) against the same members
    the plain torch way: autograd through the members stacked each step, torch.optim.AdamW (fused) with a
    parameter group per member. 5 seeds x the default sweep, 150 epochs, one thread."""
    return child(f"""
import time, torch
from torch.nn import functional as F
from embedkit.heads.features import Split
from embedkit.heads.stacked import init
from embedkit.heads.trained import HeadConfig, member_generator, order_generator, train_heads
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
y = torch.arange(1200) % 6
x = torch.randn(6, 512, generator=g)[y] * 0.3 + torch.randn(1200, 512, generator=g)
tr, va = Split(x[:840], y[:840], None), Split(x[840:960], y[840:960], None)
cfg = HeadConfig(kind="{kind}").resolved()
seeds = [0, 1, 2, 3, 4]
t0 = time.perf_counter(); train_heads(tr, va, cfg, seeds, 6); written = time.perf_counter() - t0

def forward(members, x, masks):
    if cfg.kind == "linear":
        return torch.stack([x[i // G] @ m[0] + m[1] for i, m in enumerate(members)])
    h = torch.stack([F.relu(x[i // G] @ m[0] + m[1]) for i, m in enumerate(members)])
    h = h if masks is None else h * masks
    return torch.baddbmm(torch.stack([m[3] for m in members])[:, None], h, torch.stack([m[2] for m in members]))

grid = [(lr, wd) for lr in cfg.lrs for wd in cfg.weight_decays]
S, G = len(seeds), len(grid)

def plain():
    gens = [member_generator(s, lr, wd) for s in seeds for lr, wd in grid]
    orders = [order_generator(s) for s in seeds]
    members = [[p.requires_grad_() for p in init(cfg.kind, 512, 6, cfg.hidden, g)] for g in gens]
    opt = torch.optim.AdamW([{{"params": m, "lr": grid[i % G][0], "weight_decay": grid[i % G][1]}}
                             for i, m in enumerate(members)], fused=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    xs = (tr.x - tr.x.mean(0)) / tr.x.std(0)
    for epoch in range(cfg.epochs):
        perms = torch.stack([torch.randperm(840, generator=o) for o in orders])
        for s in range(0, 840, 64):
            idx = perms[:, s:s + 64]
            masks = None if cfg.kind == "linear" else torch.stack(
                [torch.rand(idx.shape[1], cfg.hidden, generator=g) < 0.8 for g in gens]) / 0.8
            logits = forward(members, xs[idx], masks)
            opt.zero_grad()
            F.cross_entropy(logits.reshape(-1, 6), tr.y[idx].repeat_interleave(G, 0).reshape(-1)).backward()
            opt.step()
        sched.step()
        with torch.no_grad():
            forward(members, ((va.x - tr.x.mean(0)) / tr.x.std(0))[None].expand(S, -1, -1), None)

t0 = time.perf_counter(); plain(); autograd = time.perf_counter() - t0
RESULT = dict(kind="{kind}", members=S * G, written_s=written, autograd_s=autograd)
""", env={"OMP_NUM_THREADS": "1"})


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
