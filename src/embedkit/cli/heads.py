"""`embedkit zeroshot` and `embedkit probe`: experiments from the cache alone."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from embedkit.cli import options as opt
from embedkit.cli.console import console, table
from embedkit.heads.knn import KS
from embedkit.prompts import FORMATS


def _show(results, attributes: str) -> None:
    """One row per run: its utility and the F1 gap of the first declared attribute."""
    from embedkit.attributes import parse

    first = parse(attributes)[0].name
    if results and "auroc_macro" in results[0].record["metrics"]:
        return _show_findings(results, first)
    rows = []
    for r in results:
        m, sel = r.record["metrics"], r.record["selection"]
        rows.append([str(r.path), "skipped (done)" if r.skipped else "ran", f"{m['accuracy']:.3f}", f"{m['f1_macro']:.3f}",
                     _abs(m["fairness"][first]["f1_gap"]), _chosen(sel)])
    table("runs", ["run", "status", "test acc", "macro F1", f"|F1 gap| {first}", "chosen on validation"], rows)


def _show_findings(results, first: str) -> None:
    """One row per run of a findings task: macro AUROC, underdiagnosis, the largest AUROC gap of ``first``."""
    rows = []
    for r in results:
        m, sel = r.record["metrics"], r.record["selection"]
        gaps = m.get("fairness", {}).get(first, {}).get("auroc_gap", {})
        largest = max((v for v in gaps.values() if v is not None), default=None)
        rows.append([str(r.path), "skipped (done)" if r.skipped else "ran", _abs(m["auroc_macro"]),
                     _abs(m["underdiagnosis"]), _abs(largest), _chosen(sel)])
    table("runs", ["run", "status", "test macro AUROC", "underdiagnosis", f"largest AUROC gap {first}",
                   "chosen on validation"], rows)


def _chosen(sel: dict) -> str:
    """What validation chose, in the method's own terms: an L-BFGS probe (recorded as lr 0) by its L2 strength."""
    if sel.get("lr") == 0.0 and "best_epoch" in sel:
        return f"l2={sel['weight_decay']} (L-BFGS, {sel['best_epoch']} iterations)"
    return ", ".join(f"{k}={v}" for k, v in sel.items() if k in ("prompt_format", "lr", "weight_decay", "best_epoch", "k"))


def _abs(value) -> str:
    """|value| to 3 places; '—' where undefined (e.g. no class with positives in both groups)."""
    return "—" if value is None else f"{abs(value):.3f}"


def _prompts(text: str) -> tuple[str, ...]:
    return FORMATS if text == "all" else opt._choices(text, "--prompts", FORMATS)


def zeroshot(
    model: str = opt.model_option(), manifest: Path = opt.manifest_option(),
    prompts: str = typer.Option("all", callback=_prompts, help="clip | gloria | cxrclip | all (best chosen on validation)."),
    seeds: str = opt.seeds_option("0-9", "Prompt-sampling seeds (the sampled formats run once per seed)"),
    cache_dir: Path = opt.cache_dir_option(), cache_file: Optional[Path] = opt.cache_file_option(),
    runs_dir: Path = opt.runs_dir_option(), dataset: Optional[str] = opt.dataset_option(), force: bool = opt.force_option(),
    attributes: Optional[str] = opt.attributes_option(),
    task: str = opt.task_option(), findings: Optional[str] = opt.findings_option(),
    positive: Optional[str] = opt.positive_option(), threshold: str = opt.threshold_option(),
) -> None:
    """Zero-shot classification from cached image and prompt embeddings (findings: CheXzero's prompt pairs)."""
    from embedkit import tasks
    from embedkit.heads.runner import ExperimentConfig, run_experiment

    _one_cache_file(model, cache_file)
    declared = tasks.parse(task, findings, positive, threshold)
    _show([r for m in model for r in run_experiment(ExperimentConfig(
        model=m, manifest=manifest, method="zeroshot", cache_dir=cache_dir, cache=cache_file, runs_dir=runs_dir,
        dataset=dataset, seeds=seeds, prompts=prompts, force=force, attributes=attributes, task=declared))], attributes)


def _one_cache_file(models: tuple[str, ...], cache_file: Path | None) -> None:
    if cache_file is not None and len(models) > 1:
        raise typer.BadParameter("--cache-file names one model's cache; give one --model with it", param_hint="--cache-file")


def probe(
    model: str = opt.model_option(), manifest: Path = opt.manifest_option(),
    head: str = typer.Option("linear", "--head", callback=opt.parse_heads,
                                         help="linear, mlp, knn — comma-separated for several in one run."),
    seeds: str = opt.seeds_option(),
    epochs: int = opt.epochs_option(), batch_size: int = opt.batch_size_option(),
    lrs: Optional[str] = opt.lrs_option("linear 1e-3,1e-2; mlp 1e-4,1e-3"),
    weight_decays: Optional[str] = opt.weight_decays_option("linear 1e-4,1e-2; mlp 1e-2"),
    hidden: int = typer.Option(128, min=1, help="MLP hidden width."),
    dropout: float = typer.Option(0.2, min=0.0, max=0.99, help="MLP dropout."),
    solver: str = typer.Option("adamw", help="Linear probe optimiser: adamw (the paper's recipe) or lbfgs (CLIP's "
                                             "protocol: full-batch L-BFGS, L2 strength chosen on validation; far "
                                             "cheaper at 100k+ rows)."),
    ks: str = typer.Option(",".join(map(str, KS)), callback=opt.parse_ks, help="kNN k candidates (chosen on validation)."),
    threads: Optional[int] = opt.threads_option(),
    cache_dir: Path = opt.cache_dir_option(), cache_file: Optional[Path] = opt.cache_file_option(),
    runs_dir: Path = opt.runs_dir_option(), dataset: Optional[str] = opt.dataset_option(), force: bool = opt.force_option(),
    attributes: Optional[str] = opt.attributes_option(),
    mitigate: str = typer.Option("", callback=opt.parse_interventions,
                                 help="Fairness interventions, comma-separated (ERM runs too): reweight, resample, "
                                      "groupdro, adversarial (in training), temperature, offsets (post-processing)."),
    attribute: str = opt.acted_on_option(),
    selection: str = opt.selection_option(),
    strength: Optional[float] = typer.Option(None, min=0.0, help="Intervention strength (groupdro eta, adversarial "
                                                                  "lambda, offsets' accuracy budget); default: the paper's."),
    task: str = opt.task_option(), findings: Optional[str] = opt.findings_option(),
    positive: Optional[str] = opt.positive_option(), threshold: str = opt.threshold_option(),
) -> None:
    """Train linear, MLP or kNN heads on cached features: every model x head in one process."""
    from embedkit.heads.runner import ExperimentConfig, run_experiment
    from embedkit.heads.trained import HeadConfig

    from embedkit import tasks
    from embedkit.heads import base
    from embedkit.heads.lbfgs import check as check_solver

    _one_cache_file(model, cache_file)
    declared = tasks.parse(task, findings, positive, threshold)
    for h in (h for h in head if h in ("linear", "mlp")):     # a wrong --solver stops before any work
        check_solver(solver, h, intervention=False)
    results = []
    for h, mit in ((h, mit) for h in head for mit in mitigate if not base.applies(mit, h)):
        console.print(f"note: {mit} trains a head, so it runs on {' and '.join(base.get(mit).on_heads)}, not {h}",
                      highlight=False)
    for m, h, mit in ((m, h, mit) for m in model for h in head for mit in (None, *mitigate)
                      if mit is None or base.applies(mit, h)):
            cfg = ExperimentConfig(model=m, manifest=manifest, method=h, cache_dir=cache_dir, cache=cache_file,
                                   runs_dir=runs_dir, dataset=dataset, seeds=seeds, ks=ks, force=force, threads=threads,
                                   attributes=attributes, mitigate=mit, attribute=attribute, selection=selection,
                                   strength=strength, task=declared,
                                   head=HeadConfig(epochs=epochs,
                                                   batch_size=batch_size, lrs=lrs, weight_decays=weight_decays,
                                                   hidden=hidden, dropout=dropout, solver=solver))
            results += run_experiment(cfg)
    _show(results, attributes)
