"""Render the report from its templates (``templates/report.{md,html}.j2``)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from embedkit.errors import EmbedkitError
from embedkit.report import findings as fnd
from embedkit.report.figures import figures, findings_figure
from embedkit.report.summary import summarise
from embedkit.report.tables import tables

CAPTIONS = {
    "fig2a_accuracy": "Fig. 2a — accuracy per model and method",
    "fig2b_class_f1_full": "Fig. 2b — per-class F1 after full fine-tuning",
    "fig3a_var_f1": "Fig. 3a — variance of per-class F1",
    "fig3b_group_f1": "Fig. 3b — macro F1 per sex × age group",
    "fig3c_gaps_full": "Fig. 3c — fairness gaps after full fine-tuning",
    "fig3d_gaps_zeroshot": "Fig. 3d — fairness gaps before fine-tuning (zero-shot)",
    "reliability_by_group": "Reliability diagrams per group (15 bins, as ece_binned)",
}
CONVENTIONS = (
    "Seeds are aggregated as mean ± sd with a 95% CI pooling every seed's stratified bootstrap. `f1_gap` is signed "
    "(sex M − F, age young − old); `eqodds` and the ECE gaps are absolute. `ece_gap` uses the paper's ECE (Eq. 4: "
    "the mean of |p − o|, no bins); `ece_binned_gap` the 15-bin ECE that the reliability diagrams draw. A gap marked * "
    "has a CI excluding 0 and a (median over seeds) permutation p below 0.05 — the percentile CI alone over-flags at "
    "this sample size; its noise floor is the median |gap| when group labels are shuffled within each class."
)


def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    return Environment(loader=PackageLoader("embedkit.report", "templates"), undefined=StrictUndefined,
                       autoescape=select_autoescape(["html"]), keep_trailing_newline=True)


def build_report(runs_dir: str | Path, out: str | Path, *, n_boot: int = 1000) -> Path:
    """Write ``out/report.md``, ``out/report.html`` (figures embedded), ``out/figures/*.png`` and
    ``out/summary.json``; returns the Markdown path."""
    from markdown_it import MarkdownIt

    runs_dir, out = Path(runs_dir), Path(out)
    if not runs_dir.is_dir():
        raise EmbedkitError(f"{runs_dir}: runs folder not found")
    groups = summarise(runs_dir, n_boot=n_boot)
    if not groups:
        raise EmbedkitError(f"{runs_dir}: no finished runs (<dataset>/<model>/<method>/seed-<k>/run.json) found; "
                            "run `embedkit probe`, `zeroshot` or `finetune` first")
    found = fnd.gaps(groups)
    beyond = sorted((f for f in found if f.significant), key=lambda f: -f.excess)
    figs = figures(groups, out / "figures")
    figs["findings"] = findings_figure(found, out / "figures")
    context = {
        "runs_dir": str(runs_dir), "n_runs": sum(len(g.runs) for g in groups), "n_groups": len(groups),
        "headline": fnd.headline(found, fnd.planted_bias(groups)), "beyond": beyond, "findings_figure": "findings.png",
        "figures": [(name, CAPTIONS.get(name, name)) for name in figs if name != "findings"], "tables": tables(groups),
        "conventions": CONVENTIONS, "conventions_html": MarkdownIt("commonmark").render(CONVENTIONS),
        "images": {p.name: base64.b64encode(p.read_bytes()).decode() for p in figs.values()},
    }
    env = _environment()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("report.md", "report.html"):
        text = env.get_template(f"{name}.j2").render(**context)
        tmp = out / f".{name}.partial"
        tmp.write_text(text)
        tmp.replace(out / name)
    (out / "summary.json").write_text(json.dumps({f"{g.dataset}/{g.model}/{g.method}": g.summary for g in groups}, indent=1))
    return out / "report.md"
