"""Statistics at the unit of independence (issue 25), measured by simulation.

1. Clustered null: datasets of patients with several images each (1-5, mean 3), a patient-level random
   effect on how recognisable their findings are (images of one patient are alike) and a patient-level
   sex with no effect on anything. The F1-gap test's false-positive rate at nominal 5 %, and the CI widths,
   with images resampled as independent (the old design) against patients (the new one).
2. Interval coverage: percentile, basic and bias-corrected (BC) bootstrap intervals of a signed two-group
   F1 gap, the absolute EqOdds gap and a three-group max - min F1 gap, on null data and with a planted
   effect, the true value taken from one sample of 400,000 rows of the same model. Also how often each
   interval excludes its own point estimate before the containment rule.

    python benchmarks/bench_stats.py [--datasets 500]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

C = 6
CLASSES = tuple("ABCDEF")


def clustered(rng, n_patients: int = 200, spread: float = 1.5):
    """Rows (y, proba, sex, patient): a patient's images share a class tendency and a difficulty."""
    sizes = rng.integers(1, 6, n_patients)
    patient = np.repeat(np.arange(n_patients), sizes)
    base = rng.integers(0, C, n_patients)[patient]
    y = np.where(rng.random(len(patient)) < 0.7, base, rng.integers(0, C, len(patient)))
    effect = rng.normal(0, spread, n_patients)[patient]
    logits = rng.normal(size=(len(y), C))
    logits[np.arange(len(y)), y] += 1.0 + effect
    p = np.exp(logits)
    sex = rng.choice(["M", "F"], n_patients)[patient]
    return y, p / p.sum(1, keepdims=True), sex, patient.astype(str)


def clustered_null(datasets: int = 500, n_boot: int = 200, n_perm: int = 200) -> dict:
    from embedkit.metrics import evaluate

    rng = np.random.default_rng(0)
    hits = {"image": 0, "patient": 0}
    widths = {"image": [], "patient": []}
    images = []
    t0 = time.perf_counter()
    for i in range(datasets):
        y, p, sex, patient = clustered(rng)
        images.append(len(y))
        for unit, ids in (("image", None), ("patient", patient)):
            r = evaluate(y, p, groups={"sex": sex}, order={"sex": ("M", "F")}, classes=CLASSES, patient_id=ids,
                         n_boot=n_boot, n_perm=n_perm, seed=i)
            hits[unit] += r["p_value"]["sex"]["f1_gap"] < 0.05
            lo, hi = r["ci"]["fairness"]["sex"]["f1_gap"]
            widths[unit].append(hi - lo)
    return {"datasets": datasets, "images": float(np.mean(images)), "patients": 200,
            "fpr": {u: hits[u] / datasets for u in hits}, "width": {u: float(np.mean(w)) for u, w in widths.items()},
            "seconds": time.perf_counter() - t0}


def _planted(rng, n: int, effect: float, groups=("M", "F"), weights=None):
    """Independent rows; the last group's findings are ``effect`` fainter (0: no effect)."""
    y = rng.integers(0, C, n)
    g = rng.choice(list(groups), n, p=weights)
    logits = rng.normal(size=(n, C))
    logits[np.arange(n), y] += 1.2 - effect * (g == groups[-1])
    p = np.exp(logits)
    return y, p / p.sum(1, keepdims=True), g


CASES = {  # name: (attribute's groups, gap)
    "f1_gap (2 groups, signed)": (("M", "F"), "f1_gap"),
    "eqodds (2 groups, absolute)": (("M", "F"), "eqodds"),
    "f1_gap (3 groups, max - min)": (("A", "B", "C"), "f1_gap"),
}


def coverage(datasets: int = 200, n: int = 240, n_boot: int = 300) -> list[dict]:
    from embedkit.metrics import evaluate
    from embedkit.metrics.intervals import METHODS, interval

    rows = []
    for name, (groups, gap) in CASES.items():
        for effect in (0.0, 0.8):
            rng = np.random.default_rng(1)
            y, p, g = _planted(rng, 400_000, effect, groups)
            truth = evaluate(y, p, groups={"a": g}, order={"a": groups}, classes=CLASSES, n_boot=1, n_perm=1)
            true = truth["fairness"]["a"][gap]
            covered = {m: 0 for m in METHODS}
            outside = {m: 0 for m in METHODS}
            for i in range(datasets):
                y, p, g = _planted(rng, n, effect, groups)
                r = evaluate(y, p, groups={"a": g}, order={"a": groups}, classes=CLASSES, n_boot=n_boot, n_perm=1,
                             seed=i, return_replicates=True)
                est, reps = r["fairness"]["a"][gap], r["_replicates"][f"fairness/a/{gap}"]
                signed = f"fairness/a/{gap}" in r["_signed"]
                for m in METHODS:
                    raw = interval(reps, est, method=m, contain=False)     # how often the raw interval misses est
                    outside[m] += not (raw[0] <= est <= raw[1])
                    lo, hi = interval(reps, est, method=m, bounds=(-1.0, 1.0) if signed else (0.0, 1.0))
                    covered[m] += lo <= true <= hi
            rows.append({"case": name, "effect": effect, "true": true,
                         **{f"cover_{m}": covered[m] / datasets for m in METHODS},
                         **{f"outside_{m}": outside[m] / datasets for m in METHODS}})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=int, default=500)
    args = ap.parse_args()
    print(clustered_null(args.datasets))
    for row in coverage(max(args.datasets // 2, 20)):
        print(row)


if __name__ == "__main__":
    main()
