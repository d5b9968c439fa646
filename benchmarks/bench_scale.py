"""A whole dataset from store to report: a synthetic store and manifest of N rows (512-d: a 32-dimensional
subspace plus isotropic noise and the findings' directions; 14 findings multi-label,
sex, age and race, ~2.5 images per patient, split 70/10/20 by patient), then each stage of the study in its own
child process on one thread (``--threads N``: N), reporting its time and the child's peak RSS:

manifest read and join, the linear probe (AdamW, the paper's sweep; and CLIP's L-BFGS protocol), the MLP probe,
``evaluate`` with 1,000 patient-level bootstraps and 1,000 permutations, the audit, the results table and report.

    python benchmarks/bench_scale.py --rows 112120 [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import string
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import child  # noqa: E402

FINDINGS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis", "Hernia",
            "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax")
D = 512
LATENT = 32        # the rows vary most along a 32-dimensional subspace, as an encoder's embeddings do (not isotropic)
MODEL = "scale"


def build(folder: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    """The store and manifest of ``n`` rows under ``folder`` (one tiny file per row: the store is keyed by content)."""
    from embedkit.cache.layout import write_cache
    from embedkit.manifest import write_manifest

    rng = np.random.default_rng(seed)
    patient = (np.arange(n) / 2.5).astype(int)
    split = np.array(["train", "val", "test"])[np.digitize(rng.random(patient.max() + 1), [0.7, 0.8])][patient]
    truth = rng.random((n, len(FINDINGS))) < np.linspace(0.01, 0.2, len(FINDINGS))
    x = (truth @ (0.08 * rng.normal(size=(len(FINDINGS), D))) + rng.normal(size=(n, D))
         + rng.normal(size=(n, LATENT)) @ rng.normal(size=(LATENT, D))).astype(np.float32)
    sex, age = rng.choice(["M", "F"], n), rng.integers(18, 95, n)
    race = rng.choice(["White", "Black", "Asian", "Other"], n, p=[0.6, 0.2, 0.1, 0.1])
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows, keys, index = [], [], {}
    for i in range(n):
        f = images / f"i{i}.png"
        data = f"image {i}".encode()
        f.write_bytes(data)
        st, key = f.stat(), _key(data)
        index[str(f.resolve())] = (st.st_size, st.st_mtime_ns, key)
        keys.append(key)
        label = "|".join(FINDINGS[j] for j in np.flatnonzero(truth[i])) or "No Finding"
        rows.append({"image_id": f"i{i}", "path": f"images/i{i}.png", "patient_id": f"p{patient[i]}", "label": label,
                     "sex": sex[i], "age": str(age[i]), "split": split[i], "race": race[i]})
    manifest = write_manifest(folder / "manifest.csv", rows, extra_columns=("race",))
    store = write_cache(folder / "cache" / f"{MODEL}.h5", embeddings_chunks=[(0, x)], n=n, dim=D, image_key=keys,
                        index=index, classes=(), text={}, attrs={"key": MODEL, "model": MODEL}, bad=[])
    return manifest, store


def _key(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


COMMON = """
import shutil, time, torch
from pathlib import Path
torch.set_num_threads({threads})
folder = Path({folder!r})
manifest, store, runs = folder / "manifest.csv", folder / "cache" / "scale.h5", folder / "runs"
from embedkit.spec import Task
task = Task(kind="multilabel")
attributes = "sex,age,race"
"""

STAGES = {
    "manifest": """
from embedkit.manifest import read_manifest
from embedkit.cache import read_cache
from embedkit.cache.join import join
t = time.perf_counter(); m = read_manifest(manifest); read_s = time.perf_counter() - t
t = time.perf_counter(); view = join(read_cache(store), m); join_s = time.perf_counter() - t
RESULT = {"seconds": read_s + join_s, "read_s": read_s, "join_s": join_s}
""",
    "probe": """
from embedkit.heads.runner import ExperimentConfig, run_experiment
from embedkit.heads.trained import HeadConfig
shutil.rmtree(runs / "$dataset", ignore_errors=True)        # a kept folder's run would be reused, not measured
t = time.perf_counter()
[run] = run_experiment(ExperimentConfig(model="scale", manifest=manifest, method="$method", cache=store, runs_dir=runs,
                                        dataset="$dataset", seeds=(0,), n_boot=0, task=task, attributes=attributes,
                                        head=HeadConfig($head), threads=torch.get_num_threads()))
RESULT = {"seconds": time.perf_counter() - t, "test_auroc_macro": run.record["metrics"]["auroc_macro"],
          "chosen": run.record["selection"].get("weight_decay")}
""",
    "evaluate": """
from embedkit.runs import read_predictions, evaluate_predictions
pred = runs / "scale/scale/linear/seed-0/predictions.csv"
if not pred.exists():                     # the paper's AdamW probe skipped: the L-BFGS one's (same rows, same cost)
    pred = runs / "scale-lbfgs/scale/linear/seed-0/predictions.csv"
t = time.perf_counter()
p = read_predictions(pred)
result = evaluate_predictions(p, attributes=attributes, n_boot=1000, n_perm=1000, threads=torch.get_num_threads())
seconds = time.perf_counter() - t
t = time.perf_counter()
evaluate_predictions(read_predictions(pred), attributes=attributes, n_boot=0, n_perm=0, threads=torch.get_num_threads())
RESULT = {"seconds": seconds, "without_resampling_s": time.perf_counter() - t, "test_rows": int((p.split == "test").sum()),
          "run": pred.parts[-5]}
""",
    "audit": """
from embedkit.audit import AuditConfig, run_audit
t = time.perf_counter()
s = run_audit(AuditConfig(model="scale", manifest=manifest, cache=store, runs_dir=runs, dataset="scale",
                          attributes=attributes, n_boot=200, n_perm=200, solver="lbfgs",
                          threads=torch.get_num_threads()))
RESULT = {"seconds": time.perf_counter() - t, "search": s["duplicates"].get("search", "exact")}
""",
    "report": """
import shutil
from embedkit.api import results
from embedkit.report.build import build_report
for cached in runs.rglob(".evaluations"):      # measure each run's first evaluation, then its reuse by the report
    shutil.rmtree(cached)
t = time.perf_counter(); table = results(runs, attributes=attributes); results_s = time.perf_counter() - t
t = time.perf_counter(); build_report(runs, folder / "report", attributes=attributes); report_s = time.perf_counter() - t
RESULT = {"seconds": results_s + report_s, "results_s": results_s, "report_s": report_s, "table_rows": len(table)}
""",
}

# (key, label, stage, template arguments); the L-BFGS probe runs last among the probes so that evaluate and the
# report read the paper's AdamW linear probe
PLAN = (("manifest", "manifest read + join", "manifest", {}),
        ("linear", "linear probe, AdamW (paper's sweep, 150 epochs)", "probe", {"method": "linear", "head": "", "dataset": "scale"}),
        ("mlp", "MLP probe (paper's sweep, 150 epochs)", "probe", {"method": "mlp", "head": "", "dataset": "scale"}),
        ("lbfgs", "linear probe, L-BFGS (CLIP's protocol)", "probe",
         {"method": "linear", "head": "solver='lbfgs'", "dataset": "scale-lbfgs"}),
        ("evaluate", "evaluate, 1,000 bootstraps + 1,000 permutations", "evaluate", {}),
        ("audit", "audit", "audit", {}),
        ("report", "results table + report", "report", {}))


def run(n: int, keep: Path | None = None, skip: tuple[str, ...] = (), threads: int = 1) -> dict:
    """Build the data, run every stage on ``threads`` threads; returns {label: result} with the build time."""
    folder = keep or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    t = time.perf_counter()
    if not (folder / "manifest.csv").exists():
        build(folder, n)
    out = {"rows": n, "threads": threads, "build_s": time.perf_counter() - t, "stages": {},
           "splits": _split_counts(folder / "manifest.csv"),
           "gemm_gflops": child(GEMM)["gflops"]}
    for key, label, stage, args in PLAN:
        if key in skip:
            continue
        code = COMMON.format(folder=str(folder), threads=threads) + string.Template(STAGES[stage]).substitute(**args)
        try:
            out["stages"][label] = child(code, env={"OMP_NUM_THREADS": str(threads)})
        except RuntimeError as exc:
            out["stages"][label] = {"error": str(exc).strip().splitlines()[-1]}
        print(label, json.dumps(out["stages"][label]), flush=True)
    if keep is None:
        shutil.rmtree(folder, ignore_errors=True)
    return out


GEMM = """
import time, torch
torch.set_num_threads(1)
a, b = torch.randn(4096, 512), torch.randn(512, 512)
a @ b
t = time.perf_counter()
for _ in range(20):
    a @ b
RESULT = {"gflops": 20 * 2 * 4096 * 512 * 512 / (time.perf_counter() - t) / 1e9}
"""


def _split_counts(manifest: Path) -> dict[str, int]:
    import csv
    from collections import Counter

    with manifest.open() as fh:
        return dict(Counter(r["split"] for r in csv.DictReader(fh)))


def probe_flops(kind: str, splits: dict[str, int], findings: int = len(FINDINGS)) -> float:
    """Multiply-adds x 2 of the paper's sweep (HeadConfig defaults), the GEMMs the heads compute: each epoch, every
    member's forward and weight gradient of each layer over train (and the MLP's hidden gradient), and the
    validation forward."""
    from embedkit.heads.trained import SWEEPS, HeadConfig

    lrs, wds = SWEEPS[kind]
    cfg, members = HeadConfig(), len(lrs) * len(wds)
    train, val = splits["train"], splits["val"]
    if kind == "linear":
        per_epoch = D * findings * (2 * train + val)
    else:
        per_epoch = D * cfg.hidden * (2 * train + val) + cfg.hidden * findings * (3 * train + val)
    return 2 * members * cfg.epochs * per_epoch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=112_120)
    ap.add_argument("--keep", type=Path, help="build (or reuse) the data in this folder and keep it")
    ap.add_argument("--skip", default="", help=f"stages to skip, comma-separated, of {','.join(p[0] for p in PLAN)}")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--threads", type=int, default=1, help="torch, faiss and BLAS threads of every stage")
    a = ap.parse_args()
    result = run(a.rows, a.keep, tuple(s for s in a.skip.split(",") if s), a.threads)
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
