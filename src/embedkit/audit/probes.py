"""Attribute probes: how well the frozen embedding predicts a sensitive attribute.

The paper's linear-probe recipe (``heads.trained``) is fitted on train with the attribute as label,
selected on validation, and scored on test: AUC (binary) or macro one-vs-rest AUC, and balanced
accuracy, with a bootstrap CI and a label-permutation baseline (the AUC of the same scores against shuffled
test labels: what chance gives at this test size), both at the unit of independence: patients drawn with
replacement within their group with all their images, and a patient's group label moved with all its images
(``metrics.resample``; image by image only where every patient has one). The AUC is also reported within
each disease class (each finding, for multi-label rows), so that a class whose prevalence differs between
groups cannot explain it.
"""

from __future__ import annotations

import numpy as np

from embedkit.cache.layout import Cache
from embedkit.errors import EmbedkitError
from embedkit.manifest import Manifest
from embedkit.metrics.auc import balanced_accuracy, macro_ovr_auc, ranked_macro_ovr_auc, score_ranks
from embedkit.metrics.intervals import interval


def attribute_values(view: Cache, attr) -> np.ndarray:
    """A declared attribute's group label for every row of a joined view ('' where missing)."""
    from embedkit.predictions import attribute_columns

    return attr.labels(attribute_columns(view.meta))


def probe_attribute(view: Cache, manifest: Manifest, attr, values: np.ndarray, *, n_boot: int, n_perm: int, seed: int,
                    solver: str = "adamw") -> dict:
    """The probe of one attribute whose group label per row (``attribute_values``) is ``values``."""
    import torch

    from embedkit.heads.features import Split
    from embedkit.heads.trained import HeadConfig, train_heads

    names = list(attr.order(values))
    if len(names) < 2:
        raise EmbedkitError(f"attribute {attr.name}: only one group ({names[0] if names else 'none'}) in {manifest.path}")
    y = np.array([names.index(v) if v in names else -1 for v in values])
    x = torch.from_numpy(np.asarray(view.embeddings, dtype=np.float32))
    split = view.meta["split"]
    part = {s: np.flatnonzero((split == s) & (y >= 0)) for s in ("train", "val", "test")}
    data = {s: Split(x[i], torch.from_numpy(y[i]), i) for s, i in part.items()}
    head = train_heads(data["train"], data["val"], HeadConfig(kind="linear", solver=solver), [seed], len(names))[0]
    test = part["test"]
    proba = head.predict_proba(x[test]).numpy()
    yt = y[test]
    auc = macro_ovr_auc(yt, proba)
    patients = view.meta["patient_id"][test]
    boot, null = resampled_aucs(yt, proba, patients, n_boot=n_boot, n_perm=n_perm, seed=seed)
    from embedkit.audit.distribution import subsets

    within = {c: macro_ovr_auc(yt[m], proba[m]) for c, m in subsets(view.meta["label"][test]).items() if c != "all"}
    within = {c: (None if not np.isfinite(v) else float(v)) for c, v in within.items()}
    finite = [v for v in within.values() if v is not None]
    return {"groups": names, "n_test": int(len(test)), "patients_test": int(len(set(patients))), "auc": float(auc),
            "auc_ci": list(interval(boot, auc, bounds=(0.0, 1.0))),      # basic, as every other interval here
            "balanced_accuracy": balanced_accuracy(yt, proba.argmax(1)),
            "chance_auc_mean": float(null.mean()), "chance_auc_q95": float(np.quantile(null, 0.95)),
            "p_value": float((1 + np.sum(null >= auc - 1e-12)) / (1 + n_perm)),
            "within_class": within, "within_class_mean": float(np.mean(finite)) if finite else None,
            "probe": {"lr": head.lr, "weight_decay": head.weight_decay, "best_epoch": head.best_epoch}}


def resampled_aucs(y: np.ndarray, proba: np.ndarray, patient_id, *, n_boot: int, n_perm: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap and permutation (macro one-vs-rest) AUCs of ``proba`` against group codes ``y``: patients drawn
    within their group (a patient whose images span groups: one mixed stratum), and each patient's group (the one
    most of its images have) shuffled among all patients, as every other statistic here resamples."""
    from embedkit.metrics.resample import Clusters

    k, rng = int(y.max()) + 1, np.random.default_rng(seed)
    within_groups, unstratified = Clusters(patient_id, y, k), Clusters(patient_id, np.zeros_like(y), 1)
    rows, boot = np.arange(len(y)), []
    for block in within_groups.bootstrap_counts(n_boot, rng):
        for counts in block:
            drawn = np.repeat(rows, counts[within_groups.patient].astype(np.int64))
            boot.append(macro_ovr_auc(y[drawn], proba[drawn]))
    ranks = score_ranks(proba)                                      # fixed under permuted labels
    labels = unstratified.patient_labels(y, k)
    null = [ranked_macro_ovr_auc(perm[unstratified.patient].astype(np.int64), ranks)
            for block in unstratified.permuted_labels(labels, n_perm, rng) for perm in block]
    return np.asarray(boot), np.asarray(null)
