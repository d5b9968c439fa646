"""Do the groups' embeddings differ in distribution? The test of Glocker et al. (Radiology: AI 2023): project
the embeddings on their leading principal components and compare, per component, the groups of each
attribute with two-sample Kolmogorov–Smirnov tests — over all images and within each class or finding, so
that a finding whose prevalence differs between groups cannot explain a difference. Every pair of groups is
compared; the p-values of one model's tests are one family, Benjamini–Hochberg controlled. The test assumes
independent samples, so each patient counts once: its first image in each subset (a patient's further images
would make the p-values optimistic). Cheap at any N: one pass for the components, then sorting.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from embedkit.metrics.distribution import ks_2samp
from embedkit.metrics.intervals import adjust

COMPONENTS = 5          # leading principal components tested
MIN_GROUP = 10          # patients (images, without patient ids) a group needs in a subset to be compared there
ALPHA = 0.05


def principal_scores(x: np.ndarray, k: int = COMPONENTS, dtype=np.float64,
                     chunk: int = 16_384) -> tuple[np.ndarray, np.ndarray]:
    """(N, k) scores on the leading components, as ``dtype``, and each one's share of the variance (covariance
    eigenvectors accumulated in float64 by chunks of rows: the memory of a chunk, not of a float64 copy)."""
    x = np.asarray(x)
    mean = x.mean(0, dtype=np.float64)
    cov = np.zeros((x.shape[1], x.shape[1]))
    for start in range(0, len(x), chunk):
        z = x[start:start + chunk].astype(np.float64)
        z -= mean
        cov += z.T @ z
    values, vectors = np.linalg.eigh(cov)
    top = np.argsort(values)[::-1][:k]
    scores = np.empty((len(x), len(top)), dtype=dtype)
    for start in range(0, len(x), chunk):
        scores[start:start + chunk] = (x[start:start + chunk].astype(np.float64) - mean) @ vectors[:, top]
    return scores, values[top] / max(values.sum(), 1e-300)


def subsets(labels: np.ndarray) -> dict[str, np.ndarray]:
    """'all' and one boolean mask per class, or per finding of multi-label rows (``A|B``; No Finding too)."""
    from embedkit.tasks import NO_FINDING, SEPARATOR, findings_of

    out = {"all": np.ones(len(labels), dtype=bool)}
    if any(SEPARATOR in str(v) for v in labels):
        found = [set(findings_of(v)) for v in labels]
        for f in sorted(set().union(*found)):
            out[f] = np.array([f in s for s in found])
        out[NO_FINDING] = np.array([not s for s in found])
    else:
        for c in sorted(set(labels)):
            out[str(c)] = labels == c
    return out


def first_per_patient(mask: np.ndarray, patient_id) -> np.ndarray:
    """``mask`` keeping only each patient's first row in it (every row where there are no patient ids)."""
    if patient_id is None:
        return mask
    rows = np.flatnonzero(mask)
    _, first = np.unique(np.asarray(patient_id)[rows], return_index=True)
    out = np.zeros_like(mask)
    out[rows[first]] = True
    return out


def ks_tests(principal: tuple[np.ndarray, np.ndarray], labels: np.ndarray, groups: dict[str, np.ndarray],
             orders: dict[str, list[str]], patient_id=None) -> dict:
    """Every (attribute, subset, pair of groups, component) KS test on the rows' ``principal_scores`` with its
    BH q, one image per patient (``first_per_patient``); a summary per attribute."""
    scores, explained = principal
    rows = []
    for subset, mask in subsets(labels).items():
        mask = first_per_patient(mask, patient_id)
        for name, values in groups.items():
            present = [g for g in orders[name] if np.sum(mask & (values == g)) >= MIN_GROUP]
            for a, b in combinations(present, 2):
                ia, ib = mask & (values == a), mask & (values == b)
                for c in range(scores.shape[1]):
                    d, p = ks_2samp(scores[ia, c], scores[ib, c])
                    rows.append({"attribute": name, "within": subset, "group_a": a, "group_b": b,
                                 "component": c + 1, "n_a": int(ia.sum()), "n_b": int(ib.sum()), "d": d, "p": p})
    for r, q in zip(rows, adjust([r["p"] for r in rows], "bh")):
        r["q"] = q
    return {"components": scores.shape[1], "explained": [float(v) for v in explained], "tests": len(rows),
            "unit": "image" if patient_id is None else "patient (its first image in each subset)",
            "alpha": ALPHA, "per_attribute": {name: _summary([r for r in rows if r["attribute"] == name])
                                              for name in groups}, "rows": rows}


def _summary(rows: list[dict]) -> dict:
    """Tests, how many reject at q < ALPHA, and the largest difference among those that do."""
    rejected = [r for r in rows if r["q"] is not None and r["q"] < ALPHA]
    top = max(rejected, key=lambda r: r["d"]) if rejected else None
    text = "—" if top is None else (f"D {top['d']:.2f} on PC{top['component']}, {top['group_a']} vs {top['group_b']}"
                                    f"{'' if top['within'] == 'all' else ' within ' + top['within']} (q {top['q']:.2g})")
    return {"tests": len(rows), "rejected": len(rejected), "largest_text": text,
            "largest": None if top is None else {k: top[k] for k in ("within", "group_a", "group_b", "component",
                                                                       "d", "q")}}


def table_rows(model: str, summary: dict) -> list[list[str]]:
    """One row per attribute of an audit.json's ``distribution`` (the CLI's and the report's table)."""
    return [[model, name, str(s["tests"]), str(s["rejected"]), s["largest_text"]]
            for name, s in summary.get("per_attribute", {}).items()]


HEADERS = ["model", "attribute", "KS tests (PCs × subsets × group pairs)", f"rejected (BH q < {ALPHA})",
           "largest difference among them"]
