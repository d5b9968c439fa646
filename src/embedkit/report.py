"""The study report: every run found under a runs folder, as Markdown, self-contained HTML and figures.

Runs are grouped by (dataset, model, method); seeds are aggregated as mean ± sd with a CI that
pools every seed's bootstrap replicates (seed and sample variation). Missing models or methods
leave a visible gap ("—"), never an error.
"""

from __future__ import annotations

import base64
import html
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedkit.errors import EmbedkitError
from embedkit.metrics import aggregate_seeds
from embedkit.metrics.suite import CELLS, significant
from embedkit.runs import PREDICTIONS, RECORD, evaluate_predictions, read_predictions

METHODS = ("zeroshot", "linear", "mlp", "knn", "lora", "full")
MODELS = ("clip", "biomedclip", "medclip-vit", "medclip-rn50", "gloria")
GAPS = ("f1_gap", "eqodds", "ece_gap")


@dataclass
class Group:
    """All seeds of one (dataset, model, method)."""

    dataset: str
    model: str
    method: str
    runs: list[Path]
    summary: dict          # aggregate_seeds output
    reliability: dict      # group -> (conf per bin, acc per bin, count per bin), pooled over seeds


def find_runs(runs_dir: Path) -> dict[tuple[str, str, str], list[Path]]:
    """(dataset, model, method) -> finished run folders (those with run.json and predictions)."""
    found: dict[tuple[str, str, str], list[Path]] = defaultdict(list)
    for record in sorted(Path(runs_dir).glob(f"*/*/*/seed-*/{RECORD}")):
        folder = record.parent
        if (folder / PREDICTIONS).is_file():
            dataset, model, method = folder.parts[-4:-1]
            found[(dataset, model, method)].append(folder)
    return found


def _reliability(preds, bins: int = 10) -> dict:
    out = {}
    groups = np.char.add(np.char.add(preds.sex.astype(str), "-"), preds.age_group())
    conf, correct = preds.proba.max(1), (preds.proba.argmax(1) == preds.y_true())
    edges = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    for g in CELLS:
        m = groups == g
        cnt = np.bincount(edges[m], minlength=bins)
        with np.errstate(invalid="ignore"):
            out[g] = (np.bincount(edges[m], conf[m], bins) / cnt, np.bincount(edges[m], correct[m], bins) / cnt, cnt)
    return out


def summarise(runs_dir: Path, *, n_boot: int = 1000) -> list[Group]:
    groups = []
    for (dataset, model, method), folders in sorted(find_runs(runs_dir).items()):
        results, preds_all = [], []
        for i, folder in enumerate(folders):
            preds = read_predictions(folder / PREDICTIONS).select("test")
            preds_all.append(preds)
            results.append(evaluate_predictions(preds, split="test", n_boot=n_boot, n_perm=n_boot, seed=i,
                                                return_replicates=True))
        summary = aggregate_seeds(results)
        summary["noise_floor"] = {a: {g: float(np.mean([r["null"][a][g] or 0 for r in results])) for g in GAPS}
                                  for a in ("sex", "age", "sex_age")}
        summary["p_value"] = {a: {g: float(np.median([r["p_value"][a][g] for r in results])) for g in GAPS}
                              for a in ("sex", "age", "sex_age")}
        rel = [_reliability(p) for p in preds_all]
        pooled = {}
        for g in CELLS:
            cnt = sum(r[g][2] for r in rel)
            with np.errstate(invalid="ignore"):
                pooled[g] = tuple(np.nansum([r[g][k] * r[g][2] for r in rel], 0) / cnt for k in (0, 1)) + (cnt,)
        groups.append(Group(dataset, model, method, folders, summary, pooled))
    return groups


def _fmt(entry: dict | None, digits: int = 3) -> str:
    if not entry or entry.get("mean") is None:
        return "—"
    mean = entry["mean"]
    text = f"{mean:.{digits}f}"
    if entry.get("sd") is not None:
        text += f" ± {entry['sd']:.{digits}f}"
    lo, hi = entry.get("ci", [None, None])
    if lo is not None:
        text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return text


def _get(tree: dict, path: str):
    for part in path.split("/"):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _models(by: dict) -> list[str]:
    """Models found, the paper's five first in their order, then any others (tiny variants) sorted."""
    return [m for m in MODELS if any(k[0] == m for k in by)] + sorted({k[0] for k in by} - set(MODELS))


def tables(groups: list[Group]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for every table of the report."""
    by = {(g.model, g.method): g for g in groups}
    models = _models(by)
    methods = [m for m in METHODS if any(k[1] == m for k in by)] or list(METHODS)
    out = []
    out.append(("Accuracy (test; mean ± sd over seeds [95% CI pooling seeds and bootstrap])", ["model", *methods],
                [[m, *(_fmt(_get(by[(m, k)].summary, "accuracy")) if (m, k) in by else "—" for k in methods)] for m in models]))
    out.append(("Macro F1", ["model", *methods],
                [[m, *(_fmt(_get(by[(m, k)].summary, "f1_macro")) if (m, k) in by else "—" for k in methods)] for m in models]))
    out.append(("Variance of per-class F1", ["model", *methods],
                [[m, *(_fmt(_get(by[(m, k)].summary, "var_f1"), 4) if (m, k) in by else "—" for k in methods)] for m in models]))
    classes = sorted({c for g in groups for c in (g.summary.get("f1") or {})})
    out.append(("Per-class F1", ["model", "method", *classes],
                [[g.model, g.method, *(_fmt(_get(g.summary, f"f1/{c}"), 2) for c in classes)] for g in groups]))
    group_cols = [("sex", "M"), ("sex", "F"), ("age", "young"), ("age", "old")] + [("sex_age", c) for c in CELLS]
    out.append(("Per-group macro F1", ["model", "method", *(g for _, g in group_cols)],
                [[g.model, g.method, *(_fmt(_get(g.summary, f"groups/{a}/{v}/f1_macro"), 2) for a, v in group_cols)]
                 for g in groups]))
    for attr, sign in (("sex", "positive: M better"), ("age", "positive: young better"), ("sex_age", "largest pairwise")):
        rows = []
        for g in groups:
            cells = []
            for gap in GAPS:
                entry = _get(g.summary, f"fairness/{attr}/{gap}")
                ci = (entry or {}).get("ci") or [None, None]
                star = " *" if significant(ci, g.summary["p_value"][attr][gap]) else ""
                cells.append(_fmt(entry) + star)
                cells.append(f"{g.summary['noise_floor'][attr][gap]:.3f}")
            rows.append([g.model, g.method, *cells])
        out.append((f"Fairness gaps, {attr} (f1_gap {sign}; * = CI excludes 0 and median permutation p < 0.05; "
                    "floor = median |gap| under the permutation null)",
                    ["model", "method", *(h for gap in GAPS for h in (gap, f"{gap} floor"))], rows))
    return out


def figures(groups: list[Group], out: Path) -> dict[str, Path]:
    """The paper's figures as PNGs; a missing method leaves an empty, labelled panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    by = {(g.model, g.method): g for g in groups}
    models = _models(by)
    paths = {}

    def bars(ax, values, labels, series, title, ylabel):
        width = 0.8 / max(len(series), 1)
        for i, s in enumerate(series):
            v = [values.get((x, s), (np.nan, np.nan, np.nan)) for x in labels]
            mean = np.array([a for a, _, _ in v], dtype=float)
            err = np.array([[a - lo if np.isfinite(lo) else 0 for a, lo, _ in v], [hi - a if np.isfinite(hi) else 0 for a, _, hi in v]])
            ax.bar(np.arange(len(labels)) + i * width, np.nan_to_num(mean), width, yerr=np.nan_to_num(err), label=s, capsize=2)
            for j, m in enumerate(mean):
                if not np.isfinite(m):
                    ax.text(j + i * width, 0, "—", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(np.arange(len(labels)) + width * (len(series) - 1) / 2, labels, rotation=20, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7, ncol=3)

    def metric(path):
        vals = {}
        for (m, k), g in by.items():
            e = _get(g.summary, path)
            if e and e.get("mean") is not None:
                vals[(m, k)] = (e["mean"], *(e["ci"] if e["ci"][0] is not None else (np.nan, np.nan)))
        return vals

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)
        paths[name] = out / f"{name}.png"

    fig, ax = plt.subplots(figsize=(9, 4))
    bars(ax, metric("accuracy"), models, list(METHODS), "Fig. 2a — accuracy per model and method", "accuracy")
    save(fig, "fig2a_accuracy")

    classes = sorted({c for g in groups for c in (g.summary.get("f1") or {})})
    fig, ax = plt.subplots(figsize=(9, 4))
    vals = {}
    for m in models:
        g = by.get((m, "full"))
        for c in classes:
            e = _get(g.summary, f"f1/{c}") if g else None
            if e and e.get("mean") is not None:
                vals[(c, m)] = (e["mean"], *(e["ci"] if e["ci"][0] is not None else (np.nan, np.nan)))
    bars(ax, vals, classes, models, "Fig. 2b — per-class F1 after full fine-tuning" + ("" if vals else " (no runs)"), "F1")
    save(fig, "fig2b_class_f1_full")

    fig, ax = plt.subplots(figsize=(9, 4))
    bars(ax, metric("var_f1"), models, list(METHODS), "Fig. 3a — variance of per-class F1", "var F1")
    save(fig, "fig3a_var_f1")

    fig, axes = plt.subplots(1, len(CELLS), figsize=(14, 4), sharey=True)
    for ax, cell in zip(axes, CELLS):
        bars(ax, metric(f"groups/sex_age/{cell}/f1_macro"), models, list(METHODS), f"Fig. 3b — macro F1, {cell}", "F1")
    save(fig, "fig3b_group_f1")

    for name, method, title in (("fig3c_gaps_full", "full", "after full fine-tuning"),
                                ("fig3d_gaps_zeroshot", "zeroshot", "before fine-tuning (zero-shot)")):
        fig, ax = plt.subplots(figsize=(10, 4))
        series = [f"{a}:{gap}" for a in ("sex", "age") for gap in GAPS]
        vals = {}
        for m in models:
            g = by.get((m, method))
            for s in series:
                a, gap = s.split(":")
                e = _get(g.summary, f"fairness/{a}/{gap}") if g else None
                if e and e.get("mean") is not None:
                    lo, hi = e["ci"] if e["ci"][0] is not None else (np.nan, np.nan)
                    flip = e["mean"] < 0
                    vals[(m, s)] = (abs(e["mean"]), -hi if flip else lo, -lo if flip else hi)
        bars(ax, vals, models, series, f"Fig. 3{'c' if method == 'full' else 'd'} — fairness gaps {title}"
             + ("" if vals else " (no runs)"), "|gap|")
        save(fig, name)

    methods = [k for k in METHODS if any(g.method == k for g in groups)]
    fig, axes = plt.subplots(max(len(methods), 1), max(len(models), 1), figsize=(3 * max(len(models), 1), 2.6 * max(len(methods), 1)),
                             squeeze=False)
    for i, k in enumerate(methods):
        for j, m in enumerate(models):
            ax = axes[i][j]
            ax.plot([0, 1], [0, 1], "k:", lw=0.8)
            g = by.get((m, k))
            if g:
                for cell in CELLS:
                    conf, acc, cnt = g.reliability[cell]
                    ok = cnt > 0
                    ax.plot(conf[ok], acc[ok], marker="o", ms=3, label=cell)
            else:
                ax.text(0.5, 0.5, "—", ha="center")
            ax.set_title(f"{m} / {k}", fontsize=8)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            if i == 0 and j == 0:
                ax.legend(fontsize=6)
    save(fig, "reliability_by_group")
    return paths


def _md_table(title, header, rows) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _html_table(title, header, rows) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<h3>{html.escape(title)}</h3><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def build_report(runs_dir: str | Path, out: str | Path, *, n_boot: int = 1000) -> Path:
    """Write ``out/report.md``, ``out/report.html`` (figures embedded) and ``out/figures/*.png``."""
    runs_dir, out = Path(runs_dir), Path(out)
    if not runs_dir.is_dir():
        raise EmbedkitError(f"{runs_dir}: runs folder not found")
    groups = summarise(runs_dir, n_boot=n_boot)
    if not groups:
        raise EmbedkitError(f"{runs_dir}: no finished runs (<dataset>/<model>/<method>/seed-<k>/run.json) found; "
                            "run `embedkit probe`, `zeroshot` or `finetune` first")
    figs = figures(groups, out / "figures")
    tabs = tables(groups)
    intro = (f"# embedkit study report\n\nRuns: `{runs_dir}` — {sum(len(g.runs) for g in groups)} runs in {len(groups)} "
             "(model, method) groups. Test split; seeds aggregated as mean ± sd with a 95% CI pooling every seed's "
             "stratified bootstrap. f1_gap is signed (sex M − F, age young − old); eqodds and ece_gap are absolute. "
             "A gap marked * has a CI excluding 0 and a permutation p below 0.05 (the percentile CI alone over-flags at this "
             "sample size); compare every gap with its noise floor.\n")
    md = [intro, "## Tables\n", *(_md_table(*t) for t in tabs), "## Figures\n"]
    md += [f"![{name}](figures/{p.name})\n" for name, p in figs.items()]
    (out / "report.md").write_text("\n".join(md))
    style = "body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;font-size:12px}" \
            "td,th{border:1px solid #ccc;padding:3px 6px}img{max-width:100%}"
    imgs = "".join(f"<h3>{html.escape(n)}</h3><img src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}'>"
                   for n, p in figs.items())
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>embedkit report</title><style>{style}</style></head>"
            f"<body><p>{html.escape(intro)}</p><h2>Tables</h2>{''.join(_html_table(*t) for t in tabs)}<h2>Figures</h2>{imgs}"
            "</body></html>")
    (out / "report.html").write_text(page)
    (out / "summary.json").write_text(json.dumps({f"{g.dataset}/{g.model}/{g.method}": g.summary for g in groups}, indent=1))
    return out / "report.md"
