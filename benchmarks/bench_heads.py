"""Cache-path experiments: the whole probe grid (in one process, through the one CLI command, where its
time goes, and its FLOP bound measured in the same process), the stacked heads with written-out gradients
against the same members trained the plain torch way, and the cost of re-encoding instead."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from common import child, cpu_model, table

MODELS = (("clip", 512), ("biomedclip", 512), ("medclip-vit", 512), ("medclip-rn50", 512), ("gloria", 768))
N_TRAIN, N_VAL, CLASSES, SEEDS, EPOCHS, HIDDEN = 840, 120, 6, 5, 150, 128


def grid_gflop(models=MODELS) -> dict:
    """The GEMM work of the grid's linear and MLP heads (default sweeps: 4 and 2 points) per head kind:
    forward and weight gradient of every layer, the MLP's hidden gradient, and each epoch's validation."""
    def layer(n_in, n_out, members, grad_input=False):
        per_row = 2 * n_in * n_out * members
        return EPOCHS * (N_TRAIN * per_row * (3 if grad_input else 2) + N_VAL * per_row)

    linear = sum(layer(d, CLASSES, SEEDS * 4) for _, d in models)
    mlp = sum(layer(d, HIDDEN, SEEDS * 2) + layer(HIDDEN, CLASSES, SEEDS * 2, grad_input=True) for _, d in models)
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
from common import timed_into
from embedkit.heads import runner, features
from embedkit.heads.runner import ExperimentConfig, run_experiment
tmp = Path(tempfile.mkdtemp())
caches = _synthetic_caches(tmp)
spent = {{"load": 0.0, "finish": 0.0}}
features.load = timed_into(spent, "load", features.load)
runner.finish_run = timed_into(spent, "finish", runner.finish_run)
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


# One 512-d model's 1,200 rows (6 classes, 7:1 train:val of the first 960), one torch thread: the stacked-head
# benchmarks' child processes start with it.
ONE_MODEL = """torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
y = torch.arange(1200) % 6
x = torch.randn(6, 512, generator=g)[y] * 0.3 + torch.randn(1200, 512, generator=g)
tr, va = Split(x[:840], y[:840], None), Split(x[840:960], y[840:960], None)
"""


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
{ONE_MODEL}cfg = HeadConfig(kind="{kind}").resolved()
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


def step_costs(kind: str) -> dict:
    """Where one model's stacked training (5 seeds x the default sweep, 150 epochs, one thread) spends its time:
    the trainer's own steps timed (validation's forward and loss counted with the steps'), the same GEMMs alone
    at their shapes, and 20 seeds stacked against 4 x 5 (what fusing four models of one width would save)."""
    return child(f"""
import sys, time, torch
sys.path.insert(0, "benchmarks")
from common import timed_into
from embedkit.heads import stacked, trained
from embedkit.heads.features import Split
from embedkit.heads.trained import HeadConfig, train_sweep
{ONE_MODEL}cfg = HeadConfig(kind="{kind}").resolved()
def fit(seeds):
    t0 = time.perf_counter(); train_sweep(tr, va, cfg, list(range(seeds)), 6); return time.perf_counter() - t0
five = min(fit(5), fit(5))
twenty = fit(20)
spent = {{}}
parts = [(trained, "rows", "gather"), (stacked, "forward", "forward"), (trained.Targets, "__call__", "loss + gradient"),
         (stacked, "backward", "backward"), (stacked.StackedAdamW, "step", "AdamW")]
saved = [getattr(o, n) for o, n, _ in parts]
for o, n, label in parts:
    setattr(o, n, timed_into(spent, label, getattr(o, n)))
total = fit(5)
for (o, n, _), f in zip(parts, saved):
    setattr(o, n, f)
def gemm(rows, width):
    a, b = torch.randn({SEEDS}, rows, 512), torch.randn({SEEDS}, 512, width)
    at, db, out = a.transpose(1, 2).contiguous(), torch.randn({SEEDS}, rows, width), torch.bmm(a, b)
    grad = torch.bmm(at, db)
    t0 = time.perf_counter()
    for _ in range(200):
        torch.bmm(a, b, out=out)
    forward = (time.perf_counter() - t0) / 200
    t0 = time.perf_counter()
    for _ in range(200):
        torch.bmm(at, db, out=grad)
    return forward, (time.perf_counter() - t0) / 200
G = len(cfg.lrs) * len(cfg.weight_decays)
width, per = (6 * G, 1) if cfg.kind == "linear" else (cfg.hidden, G)    # columns per GEMM, GEMMs per product
full, last = divmod({N_TRAIN}, cfg.batch_size)
batches = [(cfg.batch_size, full)] + ([(last, 1)] if last else [])
alone = cfg.epochs * per * (sum(n * sum(gemm(rows, width)) for rows, n in batches) + gemm({N_VAL}, width)[0])
def adamw_call(n, calls):
    p, d, m, v = (torch.rand(n) for _ in range(4))
    t0 = time.perf_counter()
    for _ in range(calls):
        torch._fused_adamw_([p], [d], [m], [v], [], [torch.ones(())], lr=1e-3, beta1=0.9, beta2=0.999,
                            weight_decay=1e-2, eps=1e-8, amsgrad=False, maximize=False)
    return (time.perf_counter() - t0) / calls
n_params = {SEEDS} * G * sum(t.numel() for t in stacked.init(cfg.kind, 512, 6, cfg.hidden, torch.Generator()))
steps = cfg.epochs * sum(n for _, n in batches)
call = adamw_call(n_params, 500)
model_ns, cached_ns = call / n_params * 1e9, (adamw_call(16384, 5000) - adamw_call(16, 5000)) / 16368 * 1e9
RESULT = dict(kind="{kind}", members={SEEDS} * G, five_s=five, twenty_s=twenty, timed_s=total, gemm_alone_s=alone,
              params=n_params, steps=steps, adamw_ns=model_ns, adamw_cached_ns=cached_ns,
              adamw_kernel_s=call * steps, **spent)
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


def grid_markdown() -> str:
    """The "whole grid" section of docs/benchmarks.md, every figure from this one run."""
    g1, g2 = probe_grid(1), probe_grid(2)
    cli = cli_grid()
    stacked = [written_vs_autograd(k) for k in ("linear", "mlp")]
    cost = reencode_cost()
    reencode = cost["seconds_per_image"] * 840 * 150 * 5 * 5 * 2  # linear + MLP, 5 models, 5 seeds
    work = grid_gflop()
    bound = {k: v / g1["gemm_gflops"] for k, v in work.items()}
    steps = [step_costs(k) for k in ("linear", "mlp")]
    one = {k: v / g1["gemm_gflops"] for k, v in grid_gflop(MODELS[:1]).items()}
    return ("## Heads on cached features: the whole grid\n\n"
            f"Measured {time.strftime('%Y-%m-%d')} on {cpu_model()}, every figure of this section in one run "
            "(`python benchmarks/run_all.py --only grid`). "
            "5 models (D = 512, GLoRIA 768) × {linear, MLP, kNN} × "
            "5 seeds × 150 epochs on 1,200 samples, default sweeps (linear: 2 lr × 2 wd; MLP hidden 128: 2 lr; "
            "kNN: 8 k), metrics with 1,000 bootstrap and 1,000 permutation replicates per run. In one process "
            "(`run_experiment` per model and head), the time split into reading the stores, fitting, and metrics + "
            "run files:\n\n"
            + table(["torch threads", "total s", "linear s", "MLP s", "kNN s", "read stores s", "fit s", "metrics + files s"],
                    [[g["threads"], f"{g['total_s']:.1f}", f"{g['linear_s']:.1f}", f"{g['mlp_s']:.1f}", f"{g['knn_s']:.1f}",
                      f"{g['load_s']:.1f}", f"{g['fit_s']:.1f}", f"{g['finish_s']:.1f}"] for g in (g1, g2)])
            + f"\nThrough the one CLI command (`embedkit probe --model clip,biomedclip,medclip-vit,medclip-rn50,gloria "
              f"--head linear,mlp,knn --seeds 0-4`, one process, process start included): **{cli['seconds']:.1f} s** "
              f"for {cli['runs']} runs.\n"
            + f"\n**Against the FLOP bound, measured in the same process** (one thread): the heads' GEMM work "
              f"(forward and weight gradient of each layer, the MLP's hidden gradient, validation every epoch) is "
              f"{work['linear']:,.0f} GFLOP for the linear probes and {work['mlp']:,.0f} GFLOP for the MLPs; a "
              f"2048² GEMM ran at {g1['gemm_gflops']:.0f} GFLOP/s in that process, so the bound is "
              f"{bound['linear']:.1f} s and {bound['mlp']:.1f} s. Measured (each head's runs, metrics and run files "
              f"included): linear {g1['linear_s']:.1f} s ({g1['linear_s'] / bound['linear']:.1f}× its bound), MLP "
              f"{g1['mlp_s']:.1f} s ({g1['mlp_s'] / bound['mlp']:.1f}×); the whole grid {g1['total_s']:.1f} s against "
              f"{sum(bound.values()):.1f} s ({g1['total_s'] / sum(bound.values()):.1f}×): the issue's goal, within "
              f"1.5×, is {'met' if g1['total_s'] <= 1.5 * sum(bound.values()) else 'not met (why: below)'}. "
              "The ratio moves with the machine: the run at d37883f, on an Intel Xeon whose 2048² GEMM ran at "
              "194 GFLOP/s, took 41.3 s against 11.1 s (3.7×) — a faster GEMM shrinks the bound, not the steps' "
              "other work.\n"
            + "\n**Written-out gradients against the plain torch way** (one model, 5 seeds × the default sweep, "
              "150 epochs, one thread; the same members, batches and dropout; the plain way is autograd through the "
              "members stacked each step and torch.optim.AdamW, fused, with a parameter group per member):\n\n"
            + table(["head", "members", "stacked, written out s", "autograd + AdamW groups s", "speed-up"],
                    [[r["kind"], r["members"], f"{r['written_s']:.2f}", f"{r['autograd_s']:.2f}",
                      f"{r['autograd_s'] / r['written_s']:.2f}×"] for r in stacked])
            + _limits(steps, one) + _grid_floor(steps, one, bound, g1)
            + "\nThe heads default to one torch thread: two are faster only on an idle machine, and two torch "
              "threads on two cores slow several-fold as soon as anything else holds a core.\n"
            + f"\nRe-encoding images every epoch instead (what FairMedFM's linear probe does): a full-size CLIP "
              f"forward costs {cost['seconds_per_image']:.3f} s per image here, so 840 training images × 150 epochs "
              f"× 5 seeds × 5 models × 2 trained heads would take about {reencode / 3600:,.0f} CPU-hours "
              f"(forward only, no sweep) against {g1['total_s']:.0f} s from the cache — about "
              f"{reencode / g1['total_s']:,.0f}× (an extrapolation from the measured per-image cost; all five "
              "encoders priced as CLIP).\n")


def _limits(steps: list[dict], one: dict) -> str:
    """Where one model's stacked training spends its time, and why the grid stays above its FLOP bound."""
    parts = ("gather", "forward", "loss + gradient", "backward", "AdamW")
    lin, mlp = steps
    gemm_adam = (mlp["gemm_alone_s"] + mlp["adamw_kernel_s"]) / one["mlp"]
    room = 1.5 * one["mlp"] - mlp["gemm_alone_s"] - mlp["adamw_kernel_s"]
    rest = mlp["timed_s"] - mlp["gemm_alone_s"] - mlp["AdamW"]
    others = ("everything else of the steps (gathering the batch, bias, ReLU, dropout's draws and masks, the loss "
              f"and its gradient, validation), which takes {rest:.2f} s")
    verdict = (f"which leaves {room:.2f} s within 1.5× for {others} and would have to shrink {rest / room:.1f}-fold"
               if room > 0 else f"beyond 1.5× already, before {others}: within 1.5× is out of reach at the "
                                "protocol's batch of 64 in float32 with AdamW")

    def fused(r):
        return r["twenty_s"] / (4 * r["five_s"])
    return ("\n**What limits the grid** (`bench_heads.step_costs`: one 512-d model, 5 seeds × the default sweep, "
            "150 epochs, one thread; the trainer's own calls timed, each epoch's validation counted with the "
            "steps' forward and loss; the same GEMMs alone at their shapes, 64-row batches; 20 seeds stacked "
            "stand for four models of one width fused):\n\n"
            + table(["head", "members", "total s", *(f"{p} s" for p in parts), "rest s", "same GEMMs alone s",
                     "20 seeds stacked s", "4 × 5 seeds s"],
                    [[r["kind"], r["members"], f"{r['timed_s']:.2f}", *(f"{r[p]:.2f}" for p in parts),
                      f"{r['timed_s'] - sum(r[p] for p in parts):.2f}", f"{r['gemm_alone_s']:.2f}",
                      f"{r['twenty_s']:.2f}", f"{4 * r['five_s']:.2f}"] for r in steps])
            + f"\nThe MLP's GEMMs alone take {mlp['gemm_alone_s']:.2f} s and its AdamW {mlp['AdamW']:.2f} s in the "
              f"trainer, of which torch's fused kernel alone, on all {mlp['params'] // 1000:,}k parameters at once, "
              f"takes {mlp['adamw_kernel_s']:.2f} s for the {mlp['steps']:,} steps. The kernel costs "
              f"{mlp['adamw_ns']:.2f} ns a parameter at that size and {mlp['adamw_cached_ns']:.2f} ns on 16k "
              "parameters that stay in cache (the call's fixed cost taken off): its cost is mostly arithmetic — a square root "
              "and two divisions per parameter, the slowest vector instructions — not memory, and no layout of the members changes that "
              "without changing the update's rounding. GEMMs alone plus that kernel alone are "
              f"{gemm_adam:.2f}× the model's FLOP bound ({one['mlp']:.2f} s at the 2048² rate), {verdict}. "
              "The linear probe's GEMMs are 24 "
              "columns wide per seed (four sweep points × 6 classes), and the rest of its step — torch's "
              "log_softmax over 6 classes (~15 ns an element in a scratch measurement), the weights copied into "
              "one GEMM per seed and the gradients back, AdamW per sweep point — "
              f"costs {(lin['timed_s'] - lin['gemm_alone_s']) / lin['gemm_alone_s']:.1f}× its GEMMs. Fusing models "
              f"of one width would change little: 20 seeds stacked took {fused(lin):.2f}× the time of four stacks "
              f"of 5 for the linear probe and {fused(mlp):.2f}× for the MLP — a step's cost grows with its members, "
              "so little fixed per-step work is left to share.\n")


def _grid_floor(steps: list[dict], one: dict, bound: dict, g1: dict) -> str:
    """The whole grid's floor under the protocol: each head's bound times its GEMMs-alone-plus-AdamW-kernel
    ratio on one 512-d model, plus reading the stores and the metrics and run files; what it leaves within 1.5×."""
    ratio = {r["kind"]: (r["gemm_alone_s"] + r["adamw_kernel_s"]) / one[r["kind"]] for r in steps}
    io = g1["load_s"] + g1["finish_s"]
    floor = sum(bound[k] * ratio[k] for k in ratio) + io
    total_bound, room, rest = sum(bound.values()), 1.5 * sum(bound.values()) - floor, g1["total_s"] - floor
    n_steps = len(MODELS) * sum(r["steps"] for r in steps)
    head = (f"\nOver the whole grid, each head's bound times that ratio (GEMMs alone plus the AdamW kernel on one "
            f"512-d model: {ratio['linear']:.2f}× for the linear probe, {ratio['mlp']:.2f}× for the MLP), plus "
            f"reading the stores and the metrics and run files ({io:.1f} s), is a floor of {floor:.1f} s, "
            f"{floor / total_bound:.2f}× the grid's bound")
    if room <= 0:
        return head + ": within 1.5× is out of reach at the protocol's batch of 64 in float32 with AdamW.\n"
    return (head + f": within 1.5× ({1.5 * total_bound:.1f} s) leaves {room:.1f} s for everything else of the "
            f"grid's {n_steps:,} steps and their validation (gathering, bias, ReLU, dropout's draws and masks, the "
            f"loss, torch's dispatch of each call), which takes {rest:.1f} s and would have to shrink "
            f"{rest / room:.1f}-fold.\n")
