"""Embedding maps: a 2-D projection per model (PCA; UMAP when installed and asked for), coloured by
class and by each attribute, and how far apart the groups sit: the largest distance between group
centroids divided by the pooled within-group RMS distance to the centroid (0: indistinguishable)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedkit.audit.probes import attribute_values
from embedkit.cache.layout import Cache
from embedkit.errors import EmbedkitError
from embedkit.manifest import Manifest


def pca_2d(x: np.ndarray) -> np.ndarray:
    z = x - x.mean(0)
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    return z @ vt[:2].T


def separation(x: np.ndarray, groups: np.ndarray) -> float:
    """max over group pairs of the centroid distance, over the pooled within-group RMS spread."""
    names = np.unique(groups)
    cents = np.stack([x[groups == g].mean(0) for g in names])
    within = np.sqrt(np.mean([((x[groups == g] - c) ** 2).sum(1).mean() for g, c in zip(names, cents)]))
    gap = max(np.linalg.norm(a - b) for i, a in enumerate(cents) for b in cents[i + 1:])
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


def draw(view: Cache, manifest: Manifest, attributes, out: Path, *, title: str, projection: str = "pca") -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.asarray(view.embeddings, dtype=np.float64)
    xy = project(x, projection)
    colourings = {"class": view.meta["label"].astype(str)} | {a.name: attribute_values(view, a) for a in attributes}
    fig, axes = plt.subplots(1, len(colourings), figsize=(4 * len(colourings), 3.8), squeeze=False)
    for ax, (name, values) in zip(axes[0], colourings.items()):
        for g in sorted(set(values)):
            m = values == g
            ax.scatter(xy[m, 0], xy[m, 1], s=5, alpha=0.6, label=str(g))
        ax.set_title(f"{title}: {projection.upper()} by {name}", fontsize=9)
        ax.legend(fontsize=6, markerscale=2)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return {"projection": projection, "separation": {name: separation(x, v) for name, v in colourings.items()}}
