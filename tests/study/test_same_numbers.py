"""The typed run spec reshaped the top floor, not the numbers: a small demo study on one model gives the
metrics recorded before the change (``same_numbers.json``, written by the code before it with
``EMBEDKIT_WRITE_GOLDEN=1``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

GOLDEN = Path(__file__).with_name("same_numbers.json")
STUDY = """
seeds = [0, 1]
attributes = ["sex", "age", "site", "sex*age"]
[data]
kind = "phantom"
out = "phantom"
per_group = 6
size = 32
bias = ["sex=F:0.6", "site=C:0.5"]
[paths]
cache_dir = "cache"
runs_dir = "runs"
report_dir = "report"
[models]
medclip-rn50-tiny = {}
[methods]
zeroshot = {}
linear = { epochs = 20, mitigate = ["reweight"] }
mlp = { epochs = 10 }
knn = {}
[report]
n_boot = 100
"""
KEYS = ("accuracy", "f1_macro", "var_f1", "ece", "fairness", "ci", "p_value", "null")


def _metrics(runs: Path) -> dict:
    out = {}
    for record in sorted(runs.glob("*/*/*/seed-*/run.json")):
        metrics = json.loads(record.read_text())["metrics"]
        out[str(record.parent.relative_to(runs))] = {k: metrics[k] for k in KEYS}
    return out


def test_the_demo_gives_the_numbers_it_gave_before(tmp_path):
    from embedkit.study import load_study, run_study

    config = tmp_path / "demo.toml"
    config.write_text(STUDY)
    steps = run_study(load_study(config))
    assert not [s.error for s in steps if s.error]
    got = _metrics(tmp_path / "runs")
    if os.environ.get("EMBEDKIT_WRITE_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True))
    expected = json.loads(GOLDEN.read_text())
    assert sorted(got) == sorted(expected)
    for run, metrics in expected.items():
        assert _close(got[run], metrics), run


def _close(a, b) -> bool:
    """Equal trees of numbers, lists and None; numbers to 1e-5. Probabilities come through float32 BLAS, whose
    kernels differ with the thread count (1e-9 between OMP_NUM_THREADS=1 and 2) and with the CPU: on another
    machine (AMD EPYC) than the one that wrote the file, ECEs and their CIs moved by up to 3.1e-6, every count-based
    number (accuracy, F1, p-values) not at all."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-5
    return a == b
