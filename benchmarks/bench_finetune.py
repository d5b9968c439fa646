"""Fine-tuning: step time against a bare PyTorch loop, peak memory, LoRA vs full, in-memory images."""

from __future__ import annotations

from common import child


def step_overhead(model: str, mode: str, batch: int = 4, steps: int = 4) -> dict:
    """Per-step seconds of `finetune.fit` and of a bare loop (same model, batches, AdamW), one process."""
    return child(f"""
import time, tempfile, torch
from pathlib import Path
from torch.nn import functional as F
from benchmarks.common import full_encoder
from embedkit.data.phantom import PhantomSpec, make_phantom
from embedkit.finetune.data import Images
from embedkit.finetune.train import Classifier, Distributed, FinetuneConfig, fit
from embedkit.finetune.lora import apply_lora
from embedkit.models import get, load_encoder
tmp = Path(tempfile.mkdtemp())
weights = get("{model}").save(full_encoder("{model}"), tmp / ("w.bin" if "{model}" == "clip" else "w"))
n = {batch} * {steps}
x = torch.randn(n, 3 if "{model}" == "clip" else 1, 224, 224)
y = torch.arange(n) % 6
data = {{s: Images(torch.arange(len(x)).numpy(), y, x) for s in ("train", "val")}}
data["val"] = Images(torch.arange(2).numpy(), y[:2], x[:2])
cfg = FinetuneConfig(model="{model}", manifest=tmp / "m.csv", mode="{mode}", weights=weights, epochs=2, batch_size={batch},
                     resume=False, rank=8)
enc = load_encoder("{model}", weights=weights)
best, model, info = fit(cfg, enc, 0, 1e-4, data, 6, tmp / "ck", Distributed(), torch.device("cpu"))
ours = best.history[-1]["step_seconds"]   # second epoch: warm
# the bare loop: same model (a fresh copy), same batches, same optimiser
from embedkit.finetune.train import _build
bare, _, _ = _build(cfg, enc, 0, 6, torch.device("cpu"))
opt = torch.optim.AdamW([p for p in bare.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.01)
bare.train()
def epoch():
    order = torch.randperm(n)
    t0 = time.perf_counter()
    for i in range(0, n, {batch}):
        idx = order[i:i + {batch}]
        loss = F.cross_entropy(bare(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    return (time.perf_counter() - t0) / {steps}
epoch()
bare_s = epoch()
RESULT = dict(model="{model}", mode="{mode}", batch={batch}, step_s=ours, bare_step_s=bare_s, overhead=ours / bare_s - 1,
              trainable=info["trainable_parameters"], total=info["total_parameters"])
""")


def in_memory_epoch(n_per_group: int = 10, size: int = 512) -> dict:
    """Epoch time with decoded images kept in memory against decoding every epoch (tiny model)."""
    return child(f"""
import tempfile, time, torch
from pathlib import Path
from embedkit.data.phantom import PhantomSpec, make_phantom
from embedkit.finetune.train import FinetuneConfig, finetune
tmp = Path(tempfile.mkdtemp())
make_phantom(tmp / "d", PhantomSpec(per_group={n_per_group}, size={size}, seed=0))
out = {{}}
for name, limit in (("in_memory", 4.0), ("streamed", 0.0)):
    cfg = FinetuneConfig(model="medclip-rn50-tiny", manifest=tmp / "d/manifest.csv", mode="full", runs_dir=tmp / name,
                         epochs=3, batch_size=32, lrs=(1e-3,), memory_limit_gb=limit, workers=1, n_boot=10)
    rec = finetune(cfg)[0]
    out[name + "_img_s"] = sum(h["images_per_s"] for h in rec["history"][1:]) / 2  # epochs 2-3 (warm)
RESULT = dict(images=24 * {n_per_group}, px={size}, **out)
""")
