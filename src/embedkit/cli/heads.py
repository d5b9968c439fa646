"""`embedkit zeroshot` and `embedkit probe`: experiments from the cache alone."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from embedkit.cli.console import table
from embedkit.heads.knn import KS
from embedkit.heads.runner import ExperimentConfig, run_experiment
from embedkit.heads.trained import HeadConfig
from embedkit.prompts import FORMATS


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def _show(results) -> None:
    rows = []
    for r in results:
        m, sel = r.record["metrics"], r.record["selection"]
        chosen = ", ".join(f"{k}={v}" for k, v in sel.items() if k in ("prompt_format", "lr", "weight_decay", "best_epoch", "k"))
        rows.append([str(r.path), "skipped (done)" if r.skipped else "ran", f"{m['accuracy']:.3f}", f"{m['f1_macro']:.3f}",
                     f"{abs(m['fairness']['sex']['f1_gap']):.3f}", chosen])
    table("runs", ["run", "status", "test acc", "macro F1", "|F1 gap| sex", "chosen on validation"], rows)


COMMON = dict(
    cache_dir=typer.Option(Path("cache"), help="Where caches live."),
    cache=typer.Option(None, help="Use this cache file instead of looking one up."),
    runs_dir=typer.Option(Path("runs"), help="Where run folders go."),
    dataset=typer.Option(None, help="Dataset name in the run path (default: the manifest's folder name)."),
    force=typer.Option(False, help="Rerun finished runs."),
)


def zeroshot(
    model: str = typer.Option(...), manifest: Path = typer.Option(...),
    prompts: str = typer.Option("all", help="clip | gloria | cxrclip | all (best chosen on validation)."),
    seeds: str = typer.Option(",".join(map(str, range(10))), help="Prompt-sampling seeds (sampled formats)."),
    cache_dir: Path = COMMON["cache_dir"], cache: Optional[Path] = COMMON["cache"], runs_dir: Path = COMMON["runs_dir"],
    dataset: Optional[str] = COMMON["dataset"], force: bool = COMMON["force"],
) -> None:
    """Zero-shot classification from cached image and prompt embeddings."""
    formats = FORMATS if prompts == "all" else tuple(p.strip() for p in prompts.split(","))
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        from embedkit.errors import EmbedkitError

        raise EmbedkitError(f"--prompts {prompts!r}: choose from {', '.join(FORMATS)} or all")
    _show(run_experiment(ExperimentConfig(model=model, manifest=manifest, method="zeroshot", cache_dir=cache_dir, cache=cache,
                                          runs_dir=runs_dir, dataset=dataset, seeds=_ints(seeds), prompts=formats, force=force)))


def probe(
    model: str = typer.Option(...), manifest: Path = typer.Option(...),
    head: str = typer.Option("linear", help="linear | mlp | knn"),
    seeds: str = typer.Option("0", help="Comma-separated seeds, run in one call."),
    epochs: int = typer.Option(150), batch_size: int = typer.Option(64),
    lrs: Optional[str] = typer.Option(None, help="Learning-rate sweep, chosen on validation (default: linear 1e-3,1e-2; mlp 1e-4,1e-3)."),
    weight_decays: Optional[str] = typer.Option(None, help="Weight-decay sweep, chosen on validation (default: linear 1e-4,1e-2; mlp 1e-2)."),
    hidden: int = typer.Option(128, help="MLP hidden width."), dropout: float = typer.Option(0.2, help="MLP dropout."),
    ks: str = typer.Option(",".join(map(str, KS)), help="kNN k candidates (chosen on validation)."),
    threads: int = typer.Option(1, help="Torch threads (one is fastest for heads this small)."),
    cache_dir: Path = COMMON["cache_dir"], cache: Optional[Path] = COMMON["cache"], runs_dir: Path = COMMON["runs_dir"],
    dataset: Optional[str] = COMMON["dataset"], force: bool = COMMON["force"],
) -> None:
    """Train a linear, MLP or kNN head on cached features."""
    cfg = ExperimentConfig(model=model, manifest=manifest, method=head, cache_dir=cache_dir, cache=cache, runs_dir=runs_dir,
                           dataset=dataset, seeds=_ints(seeds), ks=_ints(ks), force=force, threads=threads,
                           head=HeadConfig(kind=head if head in ("linear", "mlp") else "linear", epochs=epochs,
                                           batch_size=batch_size, lrs=_floats(lrs) if lrs else None,
                                           weight_decays=_floats(weight_decays) if weight_decays else None,
                                           hidden=hidden, dropout=dropout))
    _show(run_experiment(cfg))
