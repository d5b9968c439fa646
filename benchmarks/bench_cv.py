"""Issue 15's measurements: re-split / relabel without re-encoding, and what 5-fold cross-validation
buys in CI width and noise floor over the paper's single split (1,200-image phantom, planted bias)."""

from __future__ import annotations

import csv
import tempfile
import time
from pathlib import Path

import numpy as np


def resplit_and_cv(per_group: int = 50, size: int = 64, model: str = "clip-tiny") -> dict:
    from embedkit.cache.extract import ExtractConfig, extract
    from embedkit.data.folds import make_folds
    from embedkit.data.phantom import Bias, PhantomSpec, make_phantom
    from embedkit.heads.runner import ExperimentConfig, run_experiment
    from embedkit.report import summarise

    tmp = Path(tempfile.mkdtemp())
    src = make_phantom(tmp / "p", PhantomSpec(per_group=per_group, size=size, seed=0, bias=[Bias.parse("sex=F:0.6")]))
    cfg = dict(models=(model,), cache_dir=tmp / "c", workers=0)
    rows = list(csv.DictReader(src.open()))
    half = tmp / "p/half.csv"
    with half.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows[::2])
    t0 = time.perf_counter()
    first = extract(ExtractConfig(manifest=half, **cfg))[0]
    half_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    grown = extract(ExtractConfig(manifest=src, **cfg))[0]
    first_s = time.perf_counter() - t0
    for r in rows:  # relabel one image, add a column, re-split by another rule
        r["site"] = "A" if int(r["age"]) % 2 else "B"
        r["path"] = str(src.parent / r["path"])
    rows[0]["label"] = "Edema"
    folds = make_folds(src, tmp / "f", k=5, seed=3)
    t0 = time.perf_counter()
    again = extract(ExtractConfig(manifest=folds[0], **cfg))[0]
    again_s = time.perf_counter() - t0
    runs = {}
    for name, manifests in (("single split", [("single", src)]), ("5-fold CV", [(f"cv-fold{k}", m) for k, m in enumerate(folds)])):
        for dataset, m in manifests:
            run_experiment(ExperimentConfig(model=model, manifest=m, method="linear", cache_dir=tmp / "c",
                                            runs_dir=tmp / name.replace(" ", "-"), dataset=dataset, seeds=(0,), n_boot=1000))
        (g,) = summarise(tmp / name.replace(" ", "-"), n_boot=1000)
        width = lambda e: e["ci"][1] - e["ci"][0]  # noqa: E731
        runs[name] = {"n_test": 240 if name == "single split" else len(rows),
                      "f1_gap": g.summary["fairness"]["sex"]["f1_gap"], "f1_gap_ci_width": width(g.summary["fairness"]["sex"]["f1_gap"]),
                      "eqodds": g.summary["fairness"]["sex"]["eqodds"], "eqodds_ci_width": width(g.summary["fairness"]["sex"]["eqodds"]),
                      "floor_f1_gap": g.summary["noise_floor"]["sex"]["f1_gap"], "floor_eqodds": g.summary["noise_floor"]["sex"]["eqodds"]}
    return {"n": len(rows), "half_s": half_s, "half_added": first.added, "half_encode_s": first.seconds,
            "first_s": first_s, "grown_added": grown.added, "grown_encode_s": grown.seconds,
            "resplit_s": again_s, "resplit_reused": again.reused, "runs": runs}


if __name__ == "__main__":
    import json

    print(json.dumps(resplit_and_cv(), indent=1, default=float))
