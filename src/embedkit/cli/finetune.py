"""`embedkit finetune --lora|--full`: the heavy path through the image encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from embedkit.cli import options as opt
from embedkit.cli.console import console, table


def finetune(
    model: str = opt.model_option(several=False), manifest: Path = opt.manifest_option(),
    lora: bool = typer.Option(False, "--lora", help="LoRA on every layer of the image encoder."),
    full: bool = typer.Option(False, "--full", help="Train the whole image encoder."),
    mode: Optional[str] = typer.Option(None, "--mode", help="A registered fine-tuning method by name (embedkit.finetune."
                                                           "modes: lora, full, or one of yours); --lora/--full are its shortcuts."),
    weights: list[str] = opt.weights_option(),
    name: Optional[str] = opt.name_option(), arch: Optional[str] = opt.arch_option(),
    seeds: str = opt.seeds_option(), epochs: int = opt.epochs_option(), batch_size: int = opt.batch_size_option(),
    lrs: Optional[str] = opt.lrs_option("lora 1e-4,1e-3; full 1e-5,1e-4"),
    weight_decays: Optional[str] = opt.weight_decays_option("1e-2"),
    lora_rank: int = typer.Option(8, min=1, help="LoRA rank."), lora_alpha: int = typer.Option(16, min=1, help="LoRA alpha."),
    lora_dropout: float = typer.Option(0.1, min=0.0, max=0.99, help="LoRA dropout."),
    lora_targets: Optional[str] = typer.Option(None, help="Override the adapter's targets: names, param:NAME for raw parameters."),
    augment: bool = typer.Option(False, help="Small random affine jitter per image."),
    selection: str = opt.selection_option(), attribute: str = opt.acted_on_option(),
    head_init: str = typer.Option("probe", help="The head's start: probe (the linear probe on the encoder's features, "
                                                 "LP-FT) or random (the paper's fresh head)."),
    device: str = opt.device_option(), precision: str = opt.precision_option(),
    grad_checkpointing: bool = typer.Option(False, help="Recompute activations in the backward pass to save memory."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    memory_limit_gb: float = typer.Option(4.0, min=0.0, help="Keep decoded images in memory up to this size."),
    workers: Optional[int] = typer.Option(None, min=0, help="DataLoader worker processes decoding images (default: "
                                                           "several beside a GPU, none on CPU — measured faster there)."),
    skip_bad: bool = typer.Option(False, help="Leave unreadable images out instead of stopping."),
    resume: bool = typer.Option(True, help="Continue from the last checkpoint of an interrupted run."),
    force: bool = opt.force_option(), quiet: bool = opt.quiet_option(), attributes: Optional[str] = opt.attributes_option(),
    runs_dir: Path = opt.runs_dir_option(), dataset: Optional[str] = opt.dataset_option(),
    task: str = opt.task_option(), findings: Optional[str] = opt.findings_option(),
    positive: Optional[str] = opt.positive_option(), threshold: str = opt.threshold_option(),
) -> None:
    """Fine-tune an encoder with a linear head (LoRA or full); writes a run folder like the probes."""
    from embedkit import tasks
    from embedkit.finetune.train import FinetuneConfig, finetune as run

    chosen = [m for m, on in (("lora", lora), ("full", full)) if on] + ([mode] if mode else [])
    if len(chosen) != 1:
        raise typer.BadParameter("choose exactly one of --lora, --full and --mode NAME", param_hint="--lora / --full / --mode")
    from embedkit.models.registry import name_generic

    (model,), weights_of = name_generic((model,), opt.per_model(weights, (model,), "--weights"), name=name, arch=arch)
    cfg = FinetuneConfig(model=model, manifest=manifest, mode=chosen[0],
                         weights=weights_of.get(model), arch=arch,
                         runs_dir=runs_dir, dataset=dataset, seeds=seeds, epochs=epochs, batch_size=batch_size, lrs=lrs,
                         weight_decays=weight_decays or (0.01,), rank=lora_rank, alpha=lora_alpha, dropout=lora_dropout,
                         lora_targets=lora_targets, augment=augment, head_init=head_init, selection=selection,
                         attribute=attribute, device=device, precision=precision,
                         grad_checkpointing=grad_checkpointing, compile=compile, memory_limit_gb=memory_limit_gb,
                         workers=workers, skip_bad=skip_bad, resume=resume, force=force,
                         attributes=attributes, task=tasks.parse(task, findings, positive, threshold))
    records = run(cfg) if quiet else _with_progress(cfg, run)
    utility = ("auroc_macro", "underdiagnosis") if cfg.task.kind != "multiclass" else ("accuracy", "f1_macro")
    table(f"{cfg.mode} fine-tuning", ["run", "status", "trainable params", "lr", "wd", "best epoch",
                                      *(f"test {u.replace('_', ' ')}" for u in utility)],
          [[str(cfg.run_dir(r["seed"])), "skipped (done)" if r.get("skipped") else "ran", f"{r['trainable_parameters']:,}",
            r["selection"]["lr"], r["selection"].get("weight_decay"), r["selection"]["best_epoch"],
            *(f"{r['metrics'][u]:.3f}" if r["metrics"].get(u) is not None else "—" for u in utility)] for r in records])


def _with_progress(cfg, run):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  console=console, transient=True) as bar:
        tasks = {}

        def on_epoch(e: dict) -> None:
            key = (e["seed"], e["lr"], e["weight_decay"])
            if key not in tasks:
                tasks[key] = bar.add_task(f"{cfg.mode} seed {e['seed']} lr {e['lr']:g} wd {e['weight_decay']:g}",
                                          total=e["epochs"], info="")
            bar.update(tasks[key], completed=e["epoch"], info=f"loss {e['train_loss']:.3f}  val {e['val_loss']:.3f}  "
                                                             f"{e['images_per_s']:.1f} img/s")

        return run(cfg, on_epoch=on_epoch)
