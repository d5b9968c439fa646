"""`embedkit audit`: what the frozen embeddings already know (attributes, duplicates, maps)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from embedkit.cli import options as opt
from embedkit.cli.console import console, table


def audit(
    model: str = opt.model_option(), manifest: Path = opt.manifest_option(),
    attributes: Optional[str] = opt.attributes_option(),
    threshold: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="Near-duplicate cosine of the centred "
                                                        "embeddings (default: a distance-ratio test, family-wise error 0.05 over the images)."),
    projection: str = typer.Option("pca", help="The map's projection: pca, or umap (needs umap-learn)."),
    solver: str = typer.Option("adamw", help="The attribute probes' optimiser: adamw (the paper's recipe) or lbfgs "
                                             "(CLIP's protocol; far cheaper at 100k+ rows)."),
    n_boot: int = opt.n_boot_option(),
    n_perm: int = opt.n_perm_option(),
    threads: Optional[int] = opt.threads_option(),
    cache_dir: Path = opt.cache_dir_option(), cache_file: Optional[Path] = opt.cache_file_option(),
    runs_dir: Path = opt.runs_dir_option(), dataset: Optional[str] = opt.dataset_option(),
) -> None:
    """Attribute probes (AUC with CI and chance), exact and near duplicates across splits, embedding maps."""
    from embedkit.audit import AuditConfig, distribution, run_audit

    rows, dups, ks = [], [], []
    for m in model:
        cfg = AuditConfig(model=m, manifest=manifest, cache_dir=cache_dir, cache=cache_file, runs_dir=runs_dir,
                          dataset=dataset, attributes=attributes, n_boot=n_boot, n_perm=n_perm, threshold=threshold,
                          projection=projection, solver=solver, threads=threads)
        s = run_audit(cfg)
        for a, r in s["attributes"].items():
            rows.append([m, a, f"{r['auc']:.3f} [{r['auc_ci'][0]:.3f}, {r['auc_ci'][1]:.3f}]",
                         f"{r['chance_auc_q95']:.3f}", f"{r['p_value']:.3f}",
                         "—" if r["within_class_mean"] is None else f"{r['within_class_mean']:.3f}",
                         f"{r['balanced_accuracy']:.3f}", f"{s['map']['separation'][a]:.2f}"])
        ks += distribution.table_rows(m, s["distribution"])
        d = s["duplicates"]
        dups.append([m, d["exact"], d["near"], d.get("near_when") or f"cosine ≥ {d['threshold']:.4f}",
                     d["leaks"], d["across_patients"], d.get("search", "exact"), str(cfg.out_dir())])
    table("what the embeddings know: attribute probes on test",
          ["model", "attribute", "AUC [95% CI]", "chance AUC (95th pct)", "p", "AUC within classes", "balanced acc",
           "map separation"], rows)
    table("do the groups differ in distribution? Kolmogorov–Smirnov on the leading principal components",
          distribution.HEADERS, ks)
    table("duplicates", ["model", "exact pairs", "near pairs", "near when", "pairs across splits", "across patients",
                         "neighbour search", "written to"], dups)
    console.print("pairs: pairs.csv beside audit.json; every KS test: ks.csv; maps: map.png", highlight=False)
