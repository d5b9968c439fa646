"""The paper's figures as PNGs, plus the findings figure; degenerate runs (a point CI, one class)
and missing methods render as empty, labelled panels, never an error."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedkit.report.summary import Group, reliability_attribute, reliability_ece, worst_calibrated
from embedkit.report.tables import GAPS, declared, lookup, ordered_methods, ordered_models


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def point(e: dict | None) -> tuple | None:
    """(mean, low, high) of an aggregated entry, or None when it has no value."""
    if not e or e.get("mean") is None:
        return None
    return (e["mean"], *(e["ci"] if e["ci"][0] is not None else (np.nan, np.nan)))


class _Figures:
    """The paper's figures over one report's groups, each drawn by one method and saved as a PNG."""

    def __init__(self, groups: list[Group], out: Path):
        self.plt, self.out, self.groups = pyplot(), out, groups
        self.by = {(g.model, g.method): g for g in groups}
        self.models, self.methods = ordered_models(self.by), ordered_methods(groups)
        attributes = declared(groups)
        self.cross = reliability_attribute(attributes)   # the intersection when declared (the paper's sex x age cells)
        self.cells = attributes[self.cross]["groups"]
        self.singles = [a for a, s in attributes.items() if len(s.get("columns", ())) <= 1]
        self.kept = {(g.model, g.method) for g in groups if g.kept_probe}
        self.paths: dict[str, Path] = {}
        self.omitted: list[str] = []          # figures with nothing to draw, each with why (never an empty figure)

    def bars(self, ax, values, labels, series, title, ylabel, legend: bool = True):
        width = 0.8 / max(len(series), 1)
        colours = self.plt.get_cmap("tab10" if len(series) <= 10 else "tab20").colors   # no two series alike
        for i, s in enumerate(series):
            v = [values.get((x, s), (np.nan, np.nan, np.nan)) for x in labels]
            mean = np.array([a for a, _, _ in v], dtype=float)
            # a seed mean can sit outside the pooled CI (or a CI collapse to a point): never a negative bar
            err = np.clip(np.nan_to_num(np.array([[a - lo for a, lo, _ in v], [hi - a for a, _, hi in v]], dtype=float)), 0, None)
            ax.bar(np.arange(len(labels)) + i * width, np.nan_to_num(mean), width, yerr=np.nan_to_num(err), label=s,
                   capsize=1.5, error_kw={"elinewidth": 0.6}, color=colours[i % len(colours)])
            at_foot = ax.get_xaxis_transform()   # x in data, y in axes: a marker stays inside the axes at any scale
            for j, m in enumerate(mean):
                if not np.isfinite(m):
                    ax.text(j + i * width, 0, "—", ha="center", va="bottom", fontsize=7, transform=at_foot)
                elif (labels[j], s) in self.kept:   # a fine-tuning bar that is its starting linear probe
                    ax.text(j + i * width, 0.02, "= probe", ha="center", va="bottom", rotation=90, fontsize=6,
                            transform=at_foot)
        ax.set_xticks(np.arange(len(labels)) + width * (len(series) - 1) / 2, labels, rotation=35, ha="right",
                      rotation_mode="anchor", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        if legend:
            ax.legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)

    def having(self, method: str) -> list[str]:
        """The models with runs of ``method``: a figure of one method leaves the others off its axis."""
        return [m for m in self.models if (m, method) in self.by]

    def metric(self, path: str) -> dict:
        points = {key: point(lookup(g.summary, path)) for key, g in self.by.items()}
        return {k: v for k, v in points.items() if v is not None}

    def save(self, fig, name: str) -> None:
        if fig.get_layout_engine() is None:
            fig.tight_layout()
        fig.savefig(self.out / f"{name}.png", dpi=110)
        self.plt.close(fig)
        self.paths[name] = self.out / f"{name}.png"

    def omit(self, fig, why: str) -> None:
        if fig is not None:
            self.plt.close(fig)
        self.omitted.append(why)

    def per_model_method(self, name: str, path: str, title: str, ylabel: str) -> None:
        fig, ax = self.plt.subplots(figsize=(9, 4))
        self.bars(ax, self.metric(path), self.models, self.methods, title, ylabel)
        self.save(fig, name)

    def class_f1_full(self) -> None:
        classes = sorted({c for g in self.groups for c in (g.summary.get("f1") or {})})
        fig, ax = self.plt.subplots(figsize=(9, 4))
        vals = {}
        for m in self.models:
            g = self.by.get((m, "full"))
            for c in classes:
                p = point(lookup(g.summary, f"f1/{c}")) if g else None
                if p:
                    vals[(c, m)] = p
        if not vals:
            return self.omit(fig, "Fig. 2b (per-class F1 after full fine-tuning) is left out: no full fine-tuning runs.")
        self.bars(ax, vals, classes, self.having("full"), "Fig. 2b — per-class F1 after full fine-tuning", "F1")
        self.save(fig, "fig2b_class_f1_full")

    def group_f1(self) -> None:
        """Small multiples, two per row, shared axes and one legend below them all."""
        cols = min(2, len(self.cells))
        rows = -(-len(self.cells) // cols)
        fig, axes = self.plt.subplots(rows, cols, figsize=(6.5 * cols, 3.4 * rows + 0.8), sharey=True, squeeze=False,
                                      layout="constrained")
        for ax, cell in zip(axes.flat, self.cells):
            self.bars(ax, self.metric(f"groups/{self.cross}/{cell}/f1_macro"), self.models, self.methods,
                      f"Fig. 3b — macro F1, {self.cross} = {cell}", "macro F1", legend=False)
        for ax in list(axes.flat)[len(self.cells):]:
            ax.set_visible(False)
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 5), fontsize=7)
        self.save(fig, "fig3b_group_f1")

    def gaps(self, name: str, method: str, title: str) -> None:
        fig, ax = self.plt.subplots(figsize=(10, 4))
        series = [f"{a}:{gap}" for a in self.singles for gap in GAPS]
        vals = {}
        for m in self.models:
            g = self.by.get((m, method))
            for s in series:
                a, gap = s.split(":")
                p = point(lookup(g.summary, f"fairness/{a}/{gap}")) if g else None
                if p:   # |gap| with its CI folded at 0 (a signed CI spanning 0 reaches down to 0)
                    mean, lo, hi = p
                    lo, hi = (-hi, -lo) if mean < 0 else (lo, hi)
                    vals[(m, s)] = (abs(mean), max(lo, 0.0), hi)
        label = f"Fig. 3{'c' if method == 'full' else 'd'}"
        if not vals:
            return self.omit(fig, f"{label} (fairness gaps {title}) is left out: no {method} runs.")
        self.bars(ax, vals, self.having(method), series, f"{label} — fairness gaps {title}", "|gap|")
        self.save(fig, name)

    def reliability(self, few: int = 4) -> None:
        """Reliability diagrams of the ``few`` models/methods whose groups' calibration differs most, two per row
        with shared axes and one legend below; every model and method's ECE per group is in the report's table."""
        chosen = worst_calibrated(self.groups, self.cells, few)
        if not chosen:
            return self.omit(None, "Reliability diagrams are left out: no run has calibration data per group.")
        cols = min(2, len(chosen))
        rows = -(-len(chosen) // cols)
        fig, axes = self.plt.subplots(rows, cols, figsize=(4.4 * cols, 3.6 * rows + 0.6), squeeze=False,
                                      sharex=True, sharey=True, layout="constrained")
        for ax in axes.flat[len(chosen):]:
            ax.set_visible(False)
        for ax, g in zip(axes.flat, chosen):
            ax.plot([0, 1], [0, 1], "k:", lw=0.8)
            ece = reliability_ece(g, self.cells)
            for cell in (c for c in self.cells if c in g.reliability):
                conf, acc, cnt = g.reliability[cell]
                ok = np.asarray(cnt) > 0
                ax.plot(np.asarray(conf)[ok], np.asarray(acc)[ok], marker="o", ms=3, label=cell)
            ax.set_title(f"{g.model} / {g.label}: ECE {min(ece.values()):.3f}–{max(ece.values()):.3f}", fontsize=9)
            ax.set_xlim(-0.03, 1.03)      # points at confidence 1 (a kNN's unanimous votes) drawn whole
            ax.set_ylim(-0.03, 1.03)
        for ax in axes[-1]:
            ax.set_xlabel("confidence (top-class probability)", fontsize=8)
        for ax in axes[:, 0]:
            ax.set_ylabel("accuracy", fontsize=8)
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), fontsize=8,
                   title=f"{self.cross} groups", title_fontsize=8)
        fig.suptitle(f"Reliability by {self.cross}: the {len(chosen)} model/method pairs whose groups' ECE differ most "
                     "(all pairs: table \"ECE per group\")", fontsize=10)
        self.save(fig, "reliability_by_group")


def figures(groups: list[Group], out: Path) -> tuple[dict[str, Path], list[str]]:
    """The paper's figures as PNGs, and a line for each figure left out because it has nothing to draw."""
    out.mkdir(parents=True, exist_ok=True)
    f = _Figures(groups, out)
    f.per_model_method("fig2a_accuracy", "accuracy", "Fig. 2a — accuracy per model and method", "accuracy")
    f.class_f1_full()
    f.per_model_method("fig3a_var_f1", "var_f1", "Fig. 3a — variance of per-class F1", "var F1")
    f.group_f1()
    f.gaps("fig3c_gaps_full", "full", "after full fine-tuning")
    f.gaps("fig3d_gaps_zeroshot", "zeroshot", "before fine-tuning (zero-shot)")
    f.reliability()
    return f.paths, f.omitted


def findings_figure(found, out: Path) -> Path:
    """One compact matrix: rows model / method, columns attribute x gap, colour = |gap| minus its
    noise floor, '*' where the gap is beyond noise (CI excludes 0 and q < 0.05 over the report's family)."""
    plt = pyplot()

    rows = sorted({(f.model, f.method) for f in found})
    cols = sorted({(f.attribute, f.gap) for f in found}, key=lambda c: (c[0], GAPS.index(c[1])))
    grid = np.full((max(len(rows), 1), max(len(cols), 1)), np.nan)
    # narrow columns (their labels stand upright) so that the page shows the matrix at full size: 8-pt labels
    fig, ax = plt.subplots(figsize=(3.0 + 0.45 * len(cols), 1.4 + 0.24 * len(rows)), layout="constrained")
    for f in found:
        i, j = rows.index((f.model, f.method)), cols.index((f.attribute, f.gap))
        grid[i, j] = f.excess
        if f.significant:
            ax.text(j, i, "*", ha="center", va="center", fontsize=11, fontweight="bold")
    lim = np.nanmax(np.abs(grid)) if np.isfinite(grid).any() else 1.0
    im = ax.imshow(grid, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(cols)), [f"{a}\n{g}" for a, g in cols], fontsize=8, rotation=90)
    ax.set_yticks(range(len(rows)), [f"{m} / {k}" for m, k in rows], fontsize=8)
    ax.set_title("Fairness gaps beyond the noise floor (|gap| − floor; * = CI excludes 0 and q < 0.05)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03, label="|gap| − noise floor")
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "findings.png", dpi=110)
    plt.close(fig)
    return out / "findings.png"
