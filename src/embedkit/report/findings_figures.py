"""Figures of binary and multi-label tasks: AUROC per finding by group, underdiagnosis by subgroup and
intersection, and the findings x attributes heatmap of AUROC gaps (q < 0.05 starred). Each returns its
path, or None when there is nothing to draw (no empty figure is written)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedkit.report.figures import pyplot, point
from embedkit.report.tables import lookup


def _errorbars(ax, x, points, **kw) -> None:
    """Means with CI whiskers; undefined points are skipped (their tick stays, labelled by the axis)."""
    for xi, p in zip(x, points):
        if p is None:
            continue
        mean, lo, hi = p
        err = np.clip([[mean - lo], [hi - mean]], 0, None) if np.isfinite(lo) else None
        ax.errorbar([xi], [mean], yerr=err, fmt="o", capsize=2, markersize=4, **kw)
        kw.pop("label", None)


def auroc_by_group(groups, path: Path) -> Path | None:
    """A panel per (model, method) and attribute, two to a row (legible at a 1,280-px page): each finding's
    AUROC by group, one colour per group."""
    plt = pyplot()
    panels = [(g, a) for g in groups if g.attributes for a in g.attributes]
    if not panels:
        return None
    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.6 * cols, 3.0 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (g, a) in zip(axes.flat, panels):
        x = np.arange(len(g.findings))
        names = g.attributes[a]["groups"]
        for k, name in enumerate(names):
            points = [point(lookup(g.summary, f"groups/{a}/{name}/auroc/{f}")) for f in g.findings]
            _errorbars(ax, x + (k - (len(names) - 1) / 2) * 0.12, points, label=name, color=f"C{k}")
        ax.set_xticks(x, g.findings, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.axhline(0.5, color="grey", lw=0.5, ls=":")
        ax.set_title(f"{g.model} / {g.method}: {a}", fontsize=10)
        ax.set_ylabel("AUROC", fontsize=9)
        ax.legend(fontsize=8, ncol=min(len(names), 4), loc="lower left")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def underdiagnosis_by_group(groups, path: Path) -> Path | None:
    """Seyyed-Kalantari's Fig. 2 form: per (model, method), the underdiagnosis rate of every group of every
    attribute (intersections included) with its CI; the overall rate as a dashed line."""
    plt = pyplot()
    shown = [g for g in groups if g.attributes]
    if not shown:
        return None
    fig, axes = plt.subplots(len(shown), 1, figsize=(max(6.0, 0.45 * _n_groups(shown[0]) + 2), 2.6 * len(shown)),
                             squeeze=False, layout="constrained")
    for (ax,), g in zip(axes, shown):
        labels, points = [], []
        for a, s in g.attributes.items():
            for name in s["groups"]:
                labels.append(f"{a}={name}")
                points.append(point(lookup(g.summary, f"groups/{a}/{name}/underdiagnosis")))
        _errorbars(ax, np.arange(len(labels)), points, color="tab:red")
        overall = point(g.summary.get("underdiagnosis"))
        if overall:
            ax.axhline(overall[0], color="grey", lw=0.8, ls="--", label="all test images")
            ax.legend(fontsize=7)
        ax.set_xticks(np.arange(len(labels)), labels, rotation=35, ha="right", fontsize=7)
        ax.set_ylabel("underdiagnosis rate", fontsize=8)
        ax.set_title(f"{g.model} / {g.method}", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _n_groups(g) -> int:
    return sum(len(s["groups"]) for s in g.attributes.values())


def gap_heatmap(groups, path: Path) -> Path | None:
    """Findings x attributes, one panel per (model, method): each finding's AUROC gap (mean over seeds) and,
    in the last row, the underdiagnosis gap; * marks q < 0.05."""
    plt = pyplot()
    if not groups or not groups[0].attributes:
        return None
    attrs = list(groups[0].attributes)
    rows = [*groups[0].findings, "underdiagnosis"]
    cols = min(2, len(groups))
    n_rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=((0.7 * len(attrs) + 1.6) * cols + 1.0, 0.3 * len(rows) * n_rows + 1.0),
                             squeeze=False, layout="constrained")
    top = max([float(np.nanmax(_gaps(g, attrs, rows)[0])) for g in groups if np.isfinite(_gaps(g, attrs, rows)[0]).any()]
              + [0.05])
    for ax, g in zip(axes.flat, groups):
        values, stars = _gaps(g, attrs, rows)
        im = ax.imshow(np.nan_to_num(values), cmap="Reds", vmin=0, vmax=top, aspect="auto")
        for i in range(len(rows)):
            for j in range(len(attrs)):
                text = "—" if not np.isfinite(values[i, j]) else f"{values[i, j]:.2f}{'*' if stars[i, j] else ''}"
                ax.text(j, i, text, ha="center", va="center", fontsize=6)
        ax.set_xticks(range(len(attrs)), attrs, fontsize=7)
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.set_title(f"{g.model} / {g.method}", fontsize=8)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    fig.colorbar(im, ax=axes, shrink=0.6, label="gap (max − min over groups)")
    fig.suptitle("AUROC gap per finding and underdiagnosis gap, by attribute (* q < 0.05)", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _gaps(g, attrs: list[str], rows: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(findings + underdiagnosis) x attributes gap means and q < 0.05 marks of one group."""
    values = np.full((len(rows), len(attrs)), np.nan)
    stars = np.zeros_like(values, dtype=bool)
    for j, a in enumerate(attrs):
        for i, f in enumerate(rows):
            key = f"{a}/underdiagnosis_gap" if f == "underdiagnosis" else f"{a}/auroc_gap/{f}"
            entry = lookup(g.summary, f"fairness/{key}")
            if entry and entry.get("mean") is not None:
                values[i, j] = entry["mean"]
            q = g.summary.get("q_value", {}).get(key)
            stars[i, j] = q is not None and q < 0.05
    return values, stars
