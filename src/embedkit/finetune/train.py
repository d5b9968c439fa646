"""`embedkit finetune --lora|--full`: train encoder and a linear head together on images.

Recipe (defaults are the paper's): AdamW, cosine annealing per epoch, batch 64, 150 epochs,
learning rate and weight decay chosen on validation (each candidate trained in full), and the
epoch with the lowest validation loss evaluated on test. The head is LP-FT's (Kumar et al. 2022):
it standardises the embedding with the training split's statistics, exactly like the cached-feature
linear probe, and starts from that probe fitted on the encoder's own features. The state before the
first step is evaluated too ("epoch 0"), so a run is never selected worse than the probe it starts
from (the comparison of head designs that chose this: docs/benchmarks.md). Shuffling is drawn from (seed, epoch), and the last checkpoint
holds model, optimiser, scheduler and RNG state, so ``resume`` reaches the same numbers as an
uninterrupted run. Under ``torchrun`` each rank takes its slice of every global batch (DDP; gloo
on CPU, NCCL on GPU) and rank 0 writes the run.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from embedkit import tasks
from embedkit.devices import auto_workers, resolve_device
from embedkit.errors import EmbedkitError
from embedkit.finetune.data import Images, load_images
from embedkit.finetune.distributed import Distributed, init_distributed
from embedkit.finetune.head import HEAD_INITS, Head, ProbeInit, embed_split, fit_probe_init, random_init
from embedkit.finetune import modes, objective
from embedkit.finetune.choose import checkpoint_dir, choose
from embedkit.heads.selection import check as check_selection
from embedkit.manifest import read_manifest
from embedkit.models import Encoder, load_encoder
from embedkit.predictions import Predictions, attribute_columns
from embedkit.runs import check_one_kind, config_digest, finish_run, new_record, refresh_metrics, run_state
from embedkit.spec import (FAIRNESS, SWEEP, TASK, TRAINING_PRECISIONS, WHERE, Count, Decay, Fraction, Rate, Replicates,
                           Seed, Task, Where, Workers, check_bounds)


@dataclass(frozen=True)
class FinetuneConfig:
    model: str
    manifest: Path
    mode: str                                   # a registered fine-tuning method (finetune.modes): lora | full
    weights: Path | None = None
    runs_dir: Path = WHERE.runs_dir
    dataset: str | None = None
    seeds: tuple[Seed, ...] = SWEEP.seeds
    epochs: Count = SWEEP.epochs
    batch_size: Count = SWEEP.batch_size
    lrs: tuple[Rate, ...] | None = None         # None: the mode's default sweep
    weight_decays: tuple[Decay, ...] = (0.01,)
    rank: Count = 8
    alpha: Count = 16
    dropout: Fraction = 0.1
    lora_targets: str | None = None
    augment: bool = False
    device: str = "auto"
    precision: str = "fp32"                     # fp32 | bf16 (autocast)
    grad_checkpointing: bool = False
    compile: bool = False
    memory_limit_gb: Rate = 4.0
    workers: Workers | None = None                  # None: auto_workers(device), as extraction
    skip_bad: bool = False
    resume: bool = True
    force: bool = False
    n_boot: Replicates = FAIRNESS.n_boot
    attributes: str | None = FAIRNESS.attributes  # declared sensitive attributes (None: sex, age, sex*age)
    arch: str | None = None                      # a generic adapter's architecture (open_clip --arch)
    head_init: str = "probe"                     # probe (LP-FT) | random (the paper's fresh head): docs/benchmarks.md
    selection: str = FAIRNESS.selection          # how a sweep point is chosen on validation (heads.selection)
    attribute: str | None = FAIRNESS.attribute   # what a fairness-aware selection acts on; None: sex
    task: Task = TASK                            # classes (the paper's), or findings: masked BCE (finetune.objective)

    def __post_init__(self):
        """Bad settings are refused when the config is made, naming the option."""
        check_bounds(self)
        if self.precision not in TRAINING_PRECISIONS:
            raise EmbedkitError(f"--precision {self.precision}: fine-tuning runs in fp32 or bf16 (autocast)")
        modes.get(self.mode)
        check_selection(self.selection)
        if self.head_init not in HEAD_INITS:
            raise EmbedkitError(f"--head-init {self.head_init}: choose {' or '.join(HEAD_INITS)}")
        tasks.check(self.task)

    def learning_rates(self) -> tuple[float, ...]:
        return self.lrs or modes.get(self.mode).lrs

    def run_dir(self, seed: int) -> Path:
        return Where(self.manifest, self.dataset, runs_dir=self.runs_dir).run_dir(self.model, self.mode, seed)

    def identity(self) -> dict:
        """Everything that determines the result: the settings, the weights' content and the manifest's rows."""
        from embedkit.models.checkpoints import file_digest

        return {"config": self.fingerprint(), "weights": file_digest(self.weights) if self.weights else None,
                "manifest": read_manifest(self.manifest).digest()}

    def fingerprint(self) -> dict:
        d = asdict(self)
        for k in ("runs_dir", "seeds", "device", "memory_limit_gb", "workers", "resume", "force", "manifest", "compile",
                  "attributes"):
            d.pop(k)
        d["lrs"] = self.learning_rates()
        d["head"] = ("standardised linear, linear-probe start (LP-FT)" if self.head_init == "probe"
                     else "standardised linear, random start")
        if self.mode == "full":
            for k in ("rank", "alpha", "dropout", "lora_targets"):
                d.pop(k)
        for k, default in (("head_init", "probe"), ("selection", FAIRNESS.selection), ("task", asdict(TASK))):
            if d[k] == default:                                                            # defaults keep old identities
                d.pop(k)
        if "selection" not in d:
            d.pop("attribute")
        return d


class Classifier(nn.Module):
    """Image tower + standardising linear head on its embedding."""

    def __init__(self, tower: nn.Module, dim: int, n_classes: int):
        super().__init__()
        self.tower = tower
        self.head = Head(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.tower(x).float())


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Small random affine jitter per image (rotation ±10°, shift ±5 %, scale ±5 %)."""
    from torchvision.transforms.v2 import functional as TF

    out = []
    for img in x:
        r = torch.rand(4, generator=gen) * 2 - 1
        h, w = img.shape[-2:]
        out.append(TF.affine(img, angle=10 * float(r[0]), translate=[0.05 * w * float(r[1]), 0.05 * h * float(r[2])],
                             scale=1 + 0.05 * float(r[3]), shear=[0.0, 0.0]))
    return torch.stack(out)


def _freeze_batchnorm(model: nn.Module) -> None:
    """LoRA keeps the encoder's BatchNorm statistics frozen (they are part of the pretrained weights)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _trainable_state(model: nn.Module, mode: str) -> dict[str, torch.Tensor]:
    """What a checkpoint must hold: trainable parameters, plus BatchNorm buffers in full mode."""
    state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    if mode == "full":
        state |= {n: b.detach().clone() for n, b in model.named_buffers()}
    return state


def _atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@dataclass
class Fit:
    lr: float
    weight_decay: float
    best_epoch: int
    best_val_loss: float
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def _build(cfg: FinetuneConfig, enc: Encoder, seed: int, init: ProbeInit, device: torch.device):
    """A classifier on a fresh copy of ``enc``'s image tower (``enc`` itself stays untouched for the
    next sweep point), its head set to the linear probe ``init``."""
    torch.manual_seed(seed)
    model = Classifier(copy.deepcopy(enc.image_tower), enc.embed_dim, init.n_classes)
    init.apply(model.head)
    info, pins = modes.get(cfg.mode).prepare(model.tower, cfg, enc)
    for p in model.head.parameters():
        p.requires_grad_(True)
    if cfg.grad_checkpointing:
        for m in model.tower.modules():
            if hasattr(m, "set_grad_checkpointing"):
                m.set_grad_checkpointing(True)
                break
    info["trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    info["total_parameters"] = sum(p.numel() for p in model.parameters())
    return model.to(device), info, pins


def _autocast(cfg: FinetuneConfig, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")


def _loss_on(model: nn.Module, images: Images, device: torch.device, cfg: FinetuneConfig,
             batch: int = 128) -> tuple[float, torch.Tensor]:
    """Mean loss and probabilities over a split (eval mode): softmax over classes, or a sigmoid per finding."""
    model.eval()
    probs = []
    with torch.no_grad(), _autocast(cfg, device):
        for x in images.batches([list(range(i, min(i + batch, len(images.rows)))) for i in range(0, len(images.rows), batch)]):
            probs.append(objective.probabilities(model(x.to(device)).float(), images.labels).cpu())
    p = torch.cat(probs)
    return objective.validation_loss(p, images.labels), p


def _resume(last: Path, model, opt, sched, fit_info: Fit):
    ck = torch.load(last, map_location="cpu", weights_only=True)
    model.load_state_dict(ck["state"], strict=False)
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    torch.set_rng_state(ck["rng"])
    return ck["epoch"], ck["best_state"], Fit(fit_info.lr, fit_info.weight_decay, ck["best_epoch"], ck["best_val_loss"],
                                               ck["history"], ck["seconds"])


def fit(cfg: FinetuneConfig, enc: Encoder, seed: int, lr: float, wd: float, data: dict[str, Images], init: ProbeInit,
        ckpt_dir: Path, dist: Distributed, device: torch.device, on_epoch: Callable[[dict], None] | None = None):
    """Train one (seed, lr, wd) on a copy of ``enc``; returns the fit summary, the model at its best
    epoch (epoch 0 = the linear probe it started from) and its info."""
    model, info, pins = _build(cfg, enc, seed, init, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=wd)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    net = model
    if dist.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    last = ckpt_dir / "last.pt"
    if cfg.resume and last.is_file():
        start_epoch, best_state, fit_info = _resume(last, model, opt, sched, Fit(lr, wd, 0, math.inf))
    else:  # epoch 0: the state training starts from is a candidate too
        start_epoch, best_state = 0, _trainable_state(model, cfg.mode)
        fit_info = Fit(lr, wd, 0, _loss_on(model, data["val"], device, cfg)[0])
    train = data["train"]
    n = len(train.rows)
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        net.train()
        if modes.get(cfg.mode).frozen_batchnorm:
            _freeze_batchnorm(model)
        gen = torch.Generator().manual_seed(1_000_003 * seed + epoch)
        order = torch.randperm(n, generator=gen)
        batches = [order[i:i + cfg.batch_size].tolist() for i in range(0, n, cfg.batch_size)]
        losses = []
        t_train = time.perf_counter()
        for idx, x in zip(batches, train.batches(batches)):
            mine = torch.tensor_split(torch.arange(len(idx)), dist.world)[dist.rank]
            xb, yb = x[mine], train.labels[idx][mine]
            if cfg.augment:
                xb = _augment(xb, gen)
            with _autocast(cfg, device):
                loss = objective.loss(net(xb.to(device, non_blocking=True)).float(), yb.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if pins:
                pins.restore()
            losses.append(loss.item())
        sched.step()
        train_seconds = time.perf_counter() - t_train
        val_loss, _ = _loss_on(model, data["val"], device, cfg)
        fit_info.seconds += time.perf_counter() - t0
        if val_loss < fit_info.best_val_loss:
            fit_info.best_val_loss, fit_info.best_epoch = val_loss, epoch + 1
            best_state = _trainable_state(model, cfg.mode)
        fit_info.history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_loss": val_loss,
                                 "images_per_s": n / train_seconds, "step_seconds": train_seconds / len(batches)})
        if dist.main:
            _atomic_save({"state": _trainable_state(model, cfg.mode), "optimizer": opt.state_dict(),
                          "scheduler": sched.state_dict(), "rng": torch.get_rng_state(), "epoch": epoch + 1,
                          "best_state": best_state, "best_epoch": fit_info.best_epoch,
                          "best_val_loss": fit_info.best_val_loss, "history": fit_info.history,
                          "seconds": fit_info.seconds}, last)
        if on_epoch:
            on_epoch({"seed": seed, "lr": lr, "weight_decay": wd, **fit_info.history[-1], "epochs": cfg.epochs})
    model.load_state_dict(best_state, strict=False)
    if pins:
        pins.restore()
    return fit_info, model, info


def finetune(cfg: FinetuneConfig, *, on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Fine-tune for every seed (skipping finished runs); returns the run records."""
    manifest = read_manifest(cfg.manifest, attributes=cfg.attributes)  # a missing attribute is named before training
    check_one_kind(cfg.runs_dir, cfg.task.kind)
    device = resolve_device(cfg.device)
    dist = init_distributed(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    identity = cfg.identity()
    config_hash = config_digest(identity)
    records, data, enc, features = [], None, None, None
    for seed in cfg.seeds:
        folder = cfg.run_dir(seed)
        if run_state(folder, identity, manifest_digest=manifest.digest(), manifest_path=cfg.manifest).done and not cfg.force:
            records.append(refresh_metrics(folder, cfg.attributes, n_boot=cfg.n_boot, seed=seed,
                                           threshold=cfg.task.threshold) | {"skipped": True})
            continue
        if data is None:  # loaded once: every (seed, lr, wd) trains a copy of its image tower
            enc = load_encoder(cfg.model, weights=cfg.weights, seed=0)
            labels, classes = objective.targets(cfg.task, manifest)
            data = load_images(manifest, enc.preprocess, splits=("train", "val", "test"), labels=labels,
                               skip_bad=cfg.skip_bad, memory_limit_gb=cfg.memory_limit_gb,
                               workers=auto_workers(device) if cfg.workers is None else cfg.workers)
            features = {s: embed_split(enc.image_tower.to(device), data[s], device) for s in ("train", "val")}
        init = fit_probe_init(features, data, seed, len(classes))
        if cfg.head_init == "random":
            init = random_init(init, seed)
        fits, val_proba, chosen = [], [], None
        for lr in cfg.learning_rates():
            for wd in cfg.weight_decays:
                ckpt_dir = checkpoint_dir(folder, lr, wd)
                if cfg.force and dist.main:
                    (ckpt_dir / "last.pt").unlink(missing_ok=True)
                result, model, info = fit(cfg, enc, seed, lr, wd, data, init, ckpt_dir, dist, device, on_epoch)
                fits.append(result)
                if cfg.selection != "loss":
                    val_proba.append(_loss_on(model, data["val"], device, cfg)[1].numpy())
                if chosen is None or (result.best_val_loss, lr, wd) < (chosen[0].best_val_loss, chosen[0].lr, chosen[0].weight_decay):
                    chosen = (result, model, info)  # only the best model so far stays in memory
                del model
        best, model, info = chosen
        choice = {}
        if cfg.selection != "loss":
            i, choice = choose(cfg, manifest, data["val"], fits, val_proba)
            if fits[i] is not best:
                best, model = fits[i], _reload(cfg, enc, seed, init, device, checkpoint_dir(folder, fits[i].lr, fits[i].weight_decay))
        if dist.main:
            records.append(_write(cfg, seed, manifest, classes, data, model, enc, info | {"init": init.record}, best,
                                  fits, device, config_hash, identity, choice))
    return records


def _reload(cfg, enc, seed, init, device, ckpt_dir: Path) -> nn.Module:
    """A sweep point's model at its best epoch, rebuilt from its checkpoint (the strategy chose it, not the loss)."""
    model, _, pins = _build(cfg, enc, seed, init, device)
    model.load_state_dict(torch.load(ckpt_dir / "last.pt", map_location="cpu", weights_only=True)["best_state"], strict=False)
    if pins:
        pins.restore()
    return model


def _write(cfg, seed, manifest, classes, data, model, enc, info, best: Fit, fits: list[Fit], device, config_hash,
           identity, choice: dict) -> dict:
    """Predictions for val and test at the best epoch, the adapter or encoder, the head, and run.json."""
    from safetensors.torch import save_file

    folder = cfg.run_dir(seed)
    proba = {s: _loss_on(model, data[s], device, cfg)[1].numpy() for s in ("val", "test")}
    rows = np.concatenate([data["val"].rows, data["test"].rows])
    columns = {c: manifest.column(c)[rows] for c in ("image_id", "patient_id", "label", "sex", "age", *manifest.extra_columns)}
    labels = torch.cat([data["val"].labels, data["test"].labels]).numpy()
    found = labels.ndim == 2
    preds = Predictions(columns["image_id"], np.array(["val"] * len(data["val"].rows) + ["test"] * len(data["test"].rows)),
                        None if found else columns["label"], np.concatenate([proba["val"], proba["test"]]), classes,
                        attribute_columns(columns), columns["patient_id"], labels if found else None)
    modes.get(cfg.mode).save(model.tower, folder, cfg, enc)
    save_file({k: v.contiguous().cpu() for k, v in model.head.state_dict().items()}, str(folder / "head.safetensors"))
    record = new_record(method=cfg.mode, model=cfg.model, seed=seed, config=cfg.fingerprint(), config_hash=config_hash,
                        identity=identity, manifest_digest=manifest.digest(), manifest=cfg.manifest) | {
              "encoder": enc.describe(), **info,
              "selection": {"lr": best.lr, "weight_decay": best.weight_decay, "best_epoch": best.best_epoch,
                            "val_loss": best.best_val_loss,
                            "criterion": "lowest validation loss over lrs, weight decays and epochs (0 = the linear-probe start)",
                            "sweep": [{"lr": f.lr, "weight_decay": f.weight_decay, "best_epoch": f.best_epoch,
                                       "val_loss": f.best_val_loss} for f in fits]} | choice,
              "history": best.history, "timings": {"seconds": sum(f.seconds for f in fits)}}
    return finish_run(folder, preds, record, attributes=cfg.attributes, n_boot=cfg.n_boot, seed=seed,
                      threshold=cfg.task.threshold)
