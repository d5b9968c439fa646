"""Embedding maps: a 2-D projection per model (PCA; UMAP when installed and asked for), coloured by
class and by each attribute, and how far apart the groups sit: the largest distance between group
centroids divided by the pooled within-group RMS distance to the centroid (0: indistinguishable)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedkit.cache.layout import Cache
from embedkit.errors import EmbedkitError
from embedkit.metrics.stats import sums_by


MAX_POINTS = 20_000     # points drawn per panel (a seeded sample above it; statistics use every row)
MAX_LEGEND = 10         # colours per panel; rarer values are drawn as "other"


def pca_2d(x: np.ndarray) -> np.ndarray:
    from embedkit.audit.distribution import principal_scores

    return principal_scores(x, 2)[0]


def separation(x: np.ndarray, groups: np.ndarray) -> float:
    """max over group pairs of the centroid distance, over the pooled within-group RMS spread (from each
    group's mean squared norm, so no centred copy of the data is made). The pairs' distances come from the
    centroids' Gram matrix: multi-label rows have thousands of label combinations."""
    names, code, counts = np.unique(groups, return_inverse=True, return_counts=True)
    code = code.ravel()
    cents = sums_by(x, code, len(names)) / counts[:, None]
    sq = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    within = np.sqrt(np.mean(np.bincount(code, sq, len(names)) / counts - np.einsum("gd,gd->g", cents, cents)).clip(0))
    c = cents - cents.mean(0)                                  # distances unchanged, less cancellation
    norms = np.einsum("gd,gd->g", c, c)
    gap = np.sqrt((norms[:, None] + norms[None] - 2 * c @ c.T).clip(0).max())
    return float(gap / max(within, 1e-12))


def project(x: np.ndarray, method: str) -> np.ndarray:
    """2-D coordinates: ``pca`` (numpy SVD) or ``umap`` (umap-learn, when installed)."""
    if method == "pca":
        return pca_2d(x)
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise EmbedkitError("--projection umap needs the umap-learn package (pip install umap-learn); "
                                "or use --projection pca") from None
        return umap.UMAP(n_components=2, random_state=0).fit_transform(x)
    raise EmbedkitError(f"--projection {method!r}: choose pca or umap")


def draw(view: Cache, groups: dict[str, np.ndarray], out: Path, *, title: str, principal: np.ndarray,
         projection: str = "pca") -> dict:
    """The map coloured by class and by each attribute's group labels ``groups``, and the groups' separation;
    ``principal``: the rows' leading principal scores (the PCA map's axes, from every row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.asarray(view.embeddings)
    colourings = {"class": view.meta["label"].astype(str)} | groups
    shown = np.sort(np.random.default_rng(0).choice(len(x), min(len(x), MAX_POINTS), replace=False))
    xy = principal[shown, :2] if projection == "pca" else project(x[shown], projection)
    cols = min(3, len(colourings))                   # small multiples, three per row: legible at page width
    rows = -(-len(colourings) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(colourings):]:
        ax.set_visible(False)
    for ax, (name, values) in zip(axes.flat, colourings.items()):
        values = _lumped(values[shown])
        for g in sorted(set(values), key=lambda v: (v == "other", v)):
            m = values == g
            ax.scatter(xy[m, 0], xy[m, 1], s=5, alpha=0.6, label=str(g))
        ax.set_title(f"{title}: {projection.upper()} by {name}" + (f" ({len(shown):,} of {len(x):,} points)"
                                                                      if len(shown) < len(x) else ""), fontsize=9)
        ax.legend(fontsize=8, markerscale=2, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.set_layout_engine("constrained")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return {"projection": projection, "points_drawn": int(len(shown)),
            "separation": {name: separation(x, v) for name, v in colourings.items()}}


def _lumped(values: np.ndarray) -> np.ndarray:
    """The MAX_LEGEND − 1 most frequent values kept, the rest "other" (multi-label combinations are many)."""
    names, counts = np.unique(values, return_counts=True)
    if len(names) <= MAX_LEGEND:
        return values
    keep = set(names[np.argsort(-counts, kind="stable")[:MAX_LEGEND - 1]])
    return np.array([v if v in keep else "other" for v in values])
