"""Render the report from its templates (``templates/report.{md,html}.j2``)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from embedkit.audit import distribution
from embedkit.report import findings as fnd
from embedkit.report import frontier
from embedkit.report.figures import figures, findings_figure
from embedkit.metrics.suite import N_BOOT
from embedkit.spec import FAIRNESS
from embedkit.report import render, results
from embedkit.report.summary import collect
from embedkit.report.tables import tables

CAPTIONS = {
    "frontier": "Interventions: accuracy against |F1 gap| per model, ERM and each intervention, with CIs; the grey band "
                "is ERM's noise floor (a point inside it is within what shuffling the groups gives)",
    "fig2a_accuracy": "Fig. 2a — accuracy per model and method",
    "fig2b_class_f1_full": "Fig. 2b — per-class F1 after full fine-tuning",
    "fig3a_var_f1": "Fig. 3a — variance of per-class F1",
    "fig3b_group_f1": "Fig. 3b — macro F1 per group of the intersection (sex × age by default)",
    "fig3c_gaps_full": "Fig. 3c — fairness gaps after full fine-tuning",
    "fig3d_gaps_zeroshot": "Fig. 3d — fairness gaps before fine-tuning (zero-shot)",
    "reliability_by_group": "Reliability diagrams per group (15 bins, as ece_binned)",
}
EVERY_GAP = "Every gap — value, CI, noise floor, p and q — is in the matrix below and the fairness tables."
CONVENTIONS = (
    "Every CI and p-value resamples patients (a cluster bootstrap stratified by class, and group labels permuted per "
    "patient within class) when the predictions carry patient_id, else images; intervals are basic (reverse-percentile) "
    "bootstrap intervals clipped to the metric's range, so none excludes its estimate. "
    "Seeds are aggregated as mean ± sd with a 95% CI pooling every seed's bootstrap. For two groups `f1_gap` "
    "is signed in the declared order (sex M − F, age young − old) and `eqodds` averages the absolute TPR and FPR "
    "differences; for more than two groups each gap is max − min over the groups (of macro F1, of each class's TPR "
    "and FPR, of ECE), and groups under 10 test images are left out of the gaps. `eqodds` and the ECE gaps are absolute. `ece_gap` uses the paper's ECE (Eq. 4: "
    "the mean of |p − o|, no bins); `ece_binned_gap` the 15-bin ECE that the reliability diagrams draw. A gap marked * "
    "has a CI excluding 0 and a q below 0.05: q is the (median over seeds) permutation p adjusted over the report's whole "
    "family of gap tests (Benjamini–Hochberg by default, Holm with `--adjust holm`); its noise floor is the median "
    "|gap| when group labels are shuffled within each class."
)


def audits(runs_dir: Path) -> list[dict]:
    """The audits found (``<runs>/<dataset>/<model>/audit/audit.json``) as table rows and their maps."""
    out = []
    for path in sorted(runs_dir.glob("*/*/audit/audit.json")):
        s = json.loads(path.read_text())
        attrs = [[s["model"], a, f"{r['auc']:.3f} [{r['auc_ci'][0]:.3f}, {r['auc_ci'][1]:.3f}]",
                  f"{r['chance_auc_q95']:.3f}", f"{r['p_value']:.3f}",
                  "—" if r["within_class_mean"] is None else f"{r['within_class_mean']:.3f}",
                  f"{s['map']['separation'].get(a, float('nan')):.2f}"] for a, r in s["attributes"].items()]
        d = s["duplicates"]
        out.append({"model": s["model"], "dataset": path.parts[-4], "attributes": attrs,
                    "distribution": distribution.table_rows(s["model"], s.get("distribution", {})),
                    "duplicates": [s["model"], str(d["exact"]), str(d["near"]), d.get("near_when") or f"cosine ≥ {d['threshold']:.4f}", str(d["leaks"]),
                                   ", ".join(f"{k}: {v}" for k, v in d["per_split_pair"].items()) or "—",
                                   d.get("search", "exact")],
                    "map": path.with_name("map.png")})
    return out


AUDIT_HEADERS = (["model", "attribute", "AUC [95% CI]", "chance AUC (95th pct)", "p", "AUC within classes",
                  "map separation"],
                 ["model", "exact pairs", "near pairs", "near when", "pairs across splits", "per split pair", "neighbour search"],
                 distribution.HEADERS)


def _pooled_line(groups) -> list[str]:
    ks = sorted({g.summary["folds"]["k"] for g in groups if g.summary.get("folds")})
    if not ks:
        return []
    return [f"Cross-validated results are pooled out-of-fold over {'/'.join(map(str, ks))} folds: every image is tested "
            "once, and each CI resamples the pooled test patients with the fold models held fixed; the per-fold table "
            "shows the spread from refitting them."]


def _scope(groups) -> str:
    """The header's note on cross-validation: ', pooled out-of-fold over K folds' when the runs are folds."""
    ks = sorted({g.summary["folds"]["k"] for g in groups if g.summary.get("folds")})
    return f", pooled out-of-fold over {'/'.join(map(str, ks))} folds" if ks else ""


def _probe_line(groups) -> list[str]:
    """How many fine-tuning runs kept the linear probe they started from (epoch 0 selected)."""
    tuned = [g for g in groups if g.method in ("lora", "full")]
    started = sum(len(g.runs) for g in tuned)
    kept = sum(g.kept_probe for g in tuned)
    if not kept:
        return []
    return [f"{kept} of {started} fine-tuning runs kept the linear probe they started from (validation chose epoch 0): "
            "those rows are the probe, marked ‡ in the tables and '= probe' in the figures."]


def build_report(runs_dir: str | Path, out: str | Path, *, n_boot: int = N_BOOT, attributes: str | None = None,
                 adjust: str = FAIRNESS.adjust, threads: int | None = None) -> Path:
    """Write ``out/report.md``, ``out/report.html`` (figures embedded), ``out/figures/*.png`` and
    ``out/summary.json``; returns the Markdown path. ``threads``: blocks of each run's replicates at once."""
    from markdown_it import MarkdownIt

    runs_dir, out = Path(runs_dir), Path(out)
    from embedkit.report import findings_task

    findings_runs = findings_task.find(runs_dir)
    if findings_runs:
        return findings_task.build(runs_dir, out, findings_runs, n_boot=n_boot, attributes=attributes, adjust=adjust,
                                    threads=threads)
    groups, family = collect(runs_dir, n_boot=n_boot, attributes=attributes, adjust=adjust, threads=threads)
    found = fnd.gaps(groups)
    figs, omitted = figures(groups, out / "figures")
    figs["findings"] = findings_figure(found, out / "figures")
    front = frontier.figure(groups, out / "figures")
    if front is not None:
        figs = {"frontier": front, **figs}
    compared = frontier.table(groups, adjust)
    found_audits = audits(runs_dir)
    for a in found_audits:
        target = out / "figures" / f"audit-map-{a['dataset']}-{a['model']}.png"
        target.write_bytes(a["map"].read_bytes())
        a["map_name"] = target.name
        figs[target.stem] = target
    context = {
        "runs_dir": str(runs_dir), "n_runs": sum(len(g.runs) for g in groups), "n_groups": len(groups),
        "scope": _scope(groups), "omitted": omitted,
        "headline": (fnd.headline(found, fnd.planted_bias(groups), family, adjust) + _pooled_line(groups)
                     + _probe_line(groups) + frontier.headline(compared) + [EVERY_GAP]), "beyond": [], "more": 0, "findings_figure": "findings.png",
        "figures": [(name, CAPTIONS.get(name, name)) for name in figs if name != "findings" and not name.startswith("audit-")],
        "tables": ([compared] if compared else []) + tables(groups), "audits": found_audits, "audit_headers": AUDIT_HEADERS,
        "conventions": CONVENTIONS, "conventions_html": MarkdownIt("commonmark").render(CONVENTIONS),
        "images": {p.name: base64.b64encode(p.read_bytes()).decode() for p in figs.values()},
    }
    render.write(out, context)
    results.write(results.table(groups), out / "results.csv", "csv")    # the numbers above, as one tidy table
    (out / "summary.json").write_text(json.dumps({"family": {"tests": family, "adjust": adjust},
                                                  **{f"{g.dataset}/{g.model}/{g.method}": g.summary for g in groups}},
                                                 indent=1))
    return out / "report.md"
