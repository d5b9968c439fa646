"""k-nearest neighbours (faiss, inner product on L2-normalised embeddings), k chosen on validation.

Classes: vote fractions among the k nearest, k by validation accuracy. Findings (binary / multi-label): each
finding's frequency among the neighbours labelled for it (the training prevalence when none is), k by mean
validation AUROC over the findings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedkit.heads.base import Fitted, Method, register
from embedkit.spec import Count

KS = (1, 3, 5, 7, 11, 15, 21, 31)


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)


@dataclass
class KnnHead:
    index: object
    train_labels: np.ndarray
    n_classes: int
    k: int = 5
    val_accuracy: dict | None = None

    def neighbours(self, x: np.ndarray, k: int) -> np.ndarray:
        _, idx = self.index.search(_normalize(x), k)
        return self.train_labels[idx]

    def proba_from(self, labels: np.ndarray, k: int) -> np.ndarray:
        """Vote fractions among the k nearest (ties in argmax go to the lower class index); for findings
        targets (N, k, F) the labelled neighbours' frequency of each finding."""
        if labels.ndim == 3:
            labelled = np.isfinite(labels[:, :k])
            counts = labelled.sum(1)
            freq = np.nan_to_num(labels[:, :k]).sum(1) / np.maximum(counts, 1)
            return np.where(counts > 0, freq, np.nanmean(self.train_labels, 0))
        votes = np.zeros((len(labels), self.n_classes))
        np.add.at(votes, (np.arange(len(labels))[:, None], labels[:, :k]), 1.0)
        return votes / k

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.proba_from(self.neighbours(x, self.k), self.k)


def fit_knn(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *, n_classes: int,
            ks: tuple[int, ...] = KS) -> KnnHead:
    """Index the training split and pick k by validation accuracy (the smaller k on ties)."""
    import faiss

    xt = _normalize(x_train)
    index = faiss.IndexFlatIP(xt.shape[1])
    index.add(xt)
    head = KnnHead(index, np.asarray(y_train), n_classes)
    ks = tuple(k for k in ks if k <= len(xt))
    labels = head.neighbours(x_val, max(ks))
    if np.asarray(y_val).ndim == 2:
        from embedkit.heads.selection import finding_auc

        acc = {k: finding_auc(y_val, head.proba_from(labels, k)) for k in ks}
    else:
        acc = {k: float((head.proba_from(labels, k).argmax(1) == y_val).mean()) for k in ks}
    head.k = max(ks, key=lambda k: (acc[k], -k))
    head.val_accuracy = acc
    return head


@register
class Knn(Method):
    """kNN on the cached embeddings; no randomness, so one run under the first seed."""

    name, rank, seeded = "knn", 3, False

    @classmethod
    def options(cls):
        return {"ks": (tuple[Count, ...] | None, None)}      # None: KS

    def settings(self, cfg) -> dict:
        return {"ks": cfg.ks}

    def fit(self, cfg, cache, parts, seeds):
        tr, va = parts["train"], parts["val"]
        head = fit_knn(tr.x.numpy(), tr.y.numpy(), va.x.numpy(), va.y.numpy(), n_classes=len(cache.classes), ks=cfg.ks)
        proba = {s: head.predict_proba(parts[s].x.numpy()) for s in ("val", "test")}
        score = "mean AUROC over the findings" if tr.y.dim() == 2 else "accuracy"
        selection = {"k": head.k, "val_accuracy": head.val_accuracy, "criterion": f"highest validation {score}, smaller k on ties"}
        for seed in seeds:
            yield Fitted(seed, proba, selection)
