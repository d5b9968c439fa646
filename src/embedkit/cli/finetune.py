"""`embedkit finetune --lora|--full`: the heavy path through the image encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from embedkit.cli.console import console, table
from embedkit.errors import EmbedkitError


def finetune(
    model: str = typer.Option(...), manifest: Path = typer.Option(...),
    lora: bool = typer.Option(False, "--lora", help="LoRA on every layer of the image encoder."),
    full: bool = typer.Option(False, "--full", help="Train the whole image encoder."),
    weights: Optional[Path] = typer.Option(None, help="Published weights (see `embedkit models`)."),
    seeds: str = typer.Option("0"), epochs: int = typer.Option(150), batch_size: int = typer.Option(64),
    lrs: Optional[str] = typer.Option(None, help="Learning rates to choose from on validation (default: lora 1e-4,1e-3; full 1e-5,1e-4)."),
    weight_decay: float = typer.Option(0.01),
    rank: int = typer.Option(8), alpha: int = typer.Option(16), dropout: float = typer.Option(0.1),
    lora_targets: Optional[str] = typer.Option(None, help="Override the adapter's targets: names, param:NAME for raw parameters."),
    augment: bool = typer.Option(False, help="Small random affine jitter per image."),
    device: str = typer.Option("auto"), bf16: Optional[bool] = typer.Option(None, help="bf16 autocast (default: on for CUDA)."),
    grad_checkpointing: bool = typer.Option(False), compile: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    memory_limit_gb: float = typer.Option(4.0, help="Keep decoded images in memory up to this size."),
    workers: int = typer.Option(1), skip_bad: bool = typer.Option(False),
    resume: bool = typer.Option(True, help="Continue from the last checkpoint of an interrupted run."),
    force: bool = typer.Option(False), runs_dir: Path = typer.Option(Path("runs")), dataset: Optional[str] = typer.Option(None),
) -> None:
    """Fine-tune an encoder with a linear head (LoRA or full); writes a run folder like the probes."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from embedkit.finetune.train import FinetuneConfig, finetune as run

    if lora == full:
        raise EmbedkitError("choose exactly one of --lora and --full")
    cfg = FinetuneConfig(model=model, manifest=manifest, mode="lora" if lora else "full", weights=weights,
                         runs_dir=runs_dir, dataset=dataset, seeds=tuple(int(s) for s in seeds.split(",")), epochs=epochs,
                         batch_size=batch_size, lrs=tuple(float(v) for v in lrs.split(",")) if lrs else None,
                         weight_decay=weight_decay, rank=rank, alpha=alpha, dropout=dropout, lora_targets=lora_targets,
                         augment=augment, device=device, bf16=bf16, grad_checkpointing=grad_checkpointing, compile=compile,
                         memory_limit_gb=memory_limit_gb, workers=workers, skip_bad=skip_bad, resume=resume, force=force)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  console=console, transient=True) as bar:
        tasks = {}

        def on_epoch(e: dict) -> None:
            key = (e["seed"], e["lr"])
            if key not in tasks:
                tasks[key] = bar.add_task(f"{cfg.mode} seed {e['seed']} lr {e['lr']:g}", total=e["epochs"], info="")
            bar.update(tasks[key], completed=e["epoch"], info=f"loss {e['train_loss']:.3f}  val {e['val_loss']:.3f}  "
                                                             f"{e['images_per_s']:.1f} img/s")

        records = run(cfg, on_epoch=on_epoch)
    table(f"{cfg.mode} fine-tuning", ["seed", "status", "trainable params", "lr", "best epoch", "test acc", "macro F1"],
          [[r["seed"], "skipped (done)" if r.get("skipped") else "ran", f"{r['trainable_parameters']:,}", r["selection"]["lr"],
            r["selection"]["best_epoch"], f"{r['metrics']['accuracy']:.3f}", f"{r['metrics']['f1_macro']:.3f}"] for r in records])
