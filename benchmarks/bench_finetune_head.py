"""Where fine-tuning's head starts (issue 25: `--head-init random|probe`), measured on the demo's phantom.

Two starts on the same tower, the demo's learning rates (LoRA 3e-3, full 1e-3), 10 epochs, epoch 0
always a candidate (the state training starts from):
  random    the paper's freshly initialised head (nn.Linear's default init, standardised input);
  probe     LP-FT: the linear probe fitted on the tower's own features.
Reported on test beside the cached-feature linear probe: accuracy, predicted classes, mean top-class
confidence minus accuracy, the selected validation loss and epoch (0 with `probe` = the probe itself).

    python benchmarks/bench_finetune_head.py [--models clip-tiny,...] [--epochs 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

DESIGNS = ("random", "probe")
LRS = {"lora": 3e-3, "full": 1e-3}
MODELS = ("clip-tiny", "biomedclip-tiny", "medclip-vit-tiny", "medclip-rn50-tiny", "gloria-tiny")


def _init(design: str, probe, seed: int):
    """The start each design trains from (``probe`` is the fitted linear probe)."""
    from embedkit.finetune.head import random_init

    return probe if design == "probe" else random_init(probe, seed)


def compare(manifest: Path, models=MODELS, epochs: int = 10) -> list[dict]:
    from embedkit.finetune.data import load_images
    from embedkit.finetune.head import embed_split, fit_probe_init
    from embedkit.finetune.train import Distributed, FinetuneConfig, _loss_on, fit
    from embedkit.manifest import read_manifest
    from embedkit.models import load_encoder

    m = read_manifest(manifest)
    cpu, rows = torch.device("cpu"), []
    for name in models:
        enc = load_encoder(name)
        data = load_images(m, enc.preprocess, splits=("train", "val", "test"), labels=m.labels(), skip_bad=False,
                           memory_limit_gb=2, workers=0)
        feats = {s: embed_split(enc.image_tower, data[s], cpu) for s in ("train", "val", "test")}
        probe = fit_probe_init(feats, data, 0, len(m.classes))
        lp = torch.softmax(((feats["test"] - probe.mean) / probe.std) @ probe.weight.T + probe.bias, -1).numpy()
        rows.append(_row(name, "-", "linear probe (cache)", lp, data["test"].labels.numpy(), probe.record["val_loss"]))
        for mode, lr in LRS.items():
            cfg = FinetuneConfig(model=name, manifest=manifest, mode=mode, epochs=epochs, batch_size=64)
            for design in DESIGNS:
                with tempfile.TemporaryDirectory() as ck:
                    best, model, _ = fit(cfg, enc, 0, lr, 0.01, data, _init(design, probe, 0),
                                         Path(ck), Distributed(), cpu)
                p = _loss_on(model, data["test"], cpu, cfg)[1].numpy()
                rows.append(_row(name, mode, design, p, data["test"].labels.numpy(), best.best_val_loss, best.best_epoch))
    return rows


def _row(model, mode, design, proba, y, val_loss, epoch=None) -> dict:
    pred = proba.argmax(1)
    acc = float((pred == y).mean())
    return {"model": model, "mode": mode, "head": design, "test_acc": acc, "classes": int(len(set(pred))),
            "conf_minus_acc": float(proba.max(1).mean() - acc), "val_loss": float(val_loss), "best_epoch": epoch}


def demo_phantom(folder: Path) -> Path:
    from embedkit.data.phantom import Bias, PhantomSpec, make_phantom

    return make_phantom(folder, PhantomSpec(per_group=25, size=64, seed=0, bias=[Bias.parse("sex=F:0.6")]))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for r in compare(demo_phantom(Path(tmp)), tuple(args.models.split(",")), args.epochs):
            print(r, file=sys.stdout, flush=True)
