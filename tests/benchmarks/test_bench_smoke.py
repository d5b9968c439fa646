"""Every benchmark that `make bench` runs on generated data keeps running against today's API, at toy size
(two of them stopped `make bench` for several sessions unnoticed), and the interventions section's words follow
its numbers."""

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_audit  # noqa: E402
import bench_cv  # noqa: E402
import bench_extract  # noqa: E402
import bench_findings  # noqa: E402
import bench_interventions  # noqa: E402
import bench_metrics  # noqa: E402
import bench_stats  # noqa: E402
import run_all  # noqa: E402


@pytest.fixture(autouse=True)
def _scratch_in_tmp_path(tmp_path, monkeypatch):
    """The benchmarks make their scratch folders with tempfile.mkdtemp (some in a child process): here they go
    under the test's tmp_path."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("TMPDIR", str(tmp_path))


def test_metrics_findings_and_statistics_benchmarks_run_at_toy_size():
    m = bench_metrics.evaluate_time(240, n_boot=20)
    assert m["n"] == 240 and 0 < m["bare_s"] and 0 < m["seconds"]
    f = bench_findings.metrics(n=2000, n_boot=10)
    assert f["rows"] > 0 and f["patients"] <= f["rows"]
    assert bench_findings.probe(n=2000, epochs=1)["epochs"] == 1
    null = bench_stats.clustered_null(datasets=2, n_boot=10, n_perm=10)
    assert null["datasets"] == 2 and set(null["fpr"]) == {"image", "patient"}
    assert {c["case"] for c in bench_stats.coverage(datasets=1, n=240, n_boot=10)} >= {"f1_gap (2 groups, signed)"}


def test_store_benchmarks_run_at_toy_size():
    assert bench_extract.read_speed(2000, 32)["n"] == 2000
    assert bench_extract.join_merge_vs_virtual(5000, 16, 2)["shards"] == 2
    assert bench_extract.decode_rate(2, 64)["img_s_per_core"] > 0
    memory = bench_extract.peak_memory(120)                  # a clip-tiny extraction in a child process
    assert memory["n"] == 144 and memory["peak_rss_mib"] >= memory["rss_before_mib"] > 0    # both the child's own


def test_the_approximate_search_benchmark_finds_its_planted_copies_at_toy_size():
    r = bench_audit.ann_vs_exact(2000, d=32)
    assert r["searches"]["exact"]["found"] == r["planted"] == 100


def test_the_cross_validation_benchmark_adds_only_the_new_images():
    r = bench_cv.resplit_and_cv(per_group=5, size=32)
    assert r["half_added"] == r["grown_added"] == r["n"] // 2


def test_the_planted_biases_are_what_their_names_say():
    x, y, split, sex = bench_interventions.dataset(0, "rare group")
    train = split == "train"
    assert 0.05 < (sex[train] == "F").mean() < 0.15 and (sex[~train] == "F").mean() == pytest.approx(0.5, abs=0.01)
    x, y, split, sex = bench_interventions.dataset(0, "label shift")
    women = (split == "train") & (sex == "F")
    assert (y[women] < 3).mean() > 0.8 and 0.4 < (y[(split == "train") & (sex == "M")] < 3).mean() < 0.6
    assert x[sex == "F", 15].mean() - x[sex == "M", 15].mean() > 2.5           # sex shows in the image
    assert 0.09 < bench_interventions.reweighted_minority_share(3) < 0.12     # reweighing keeps the group's weight


def test_the_interventions_words_follow_the_numbers():
    text = run_all._null_words([0.0, 0.0, 0.03, 0.05, 0.05, 0.05, 0.01, 0.05, 0.03, 0.03], 100)
    assert "3.0% (30 of 1000; Wilson 95 % interval 2.1%–4.3%" in text and "consistent with the nominal" in text
    assert "unlike the nominal" in run_all._null_words([0.1] * 10, 100)
    planted = {"reweight": {"f1_gap": 0.45, "eqodds": 0.85}, "resample": {"f1_gap": 0.6, "eqodds": 0.5},
               "adversarial": {"f1_gap": 0.1, "eqodds": 0.0}}
    assert run_all._recovering(planted).startswith("reweight (eqodds), resample (f1_gap and eqodds) shrink")
    assert run_all._recovering({"offsets": {"f1_gap": 0.0, "eqodds": 0.4}}).startswith("no intervention")


def test_the_interventions_benchmark_runs_one_dataset_of_each_kind():
    for shift in (None, *bench_interventions.SHIFTS):
        rates = bench_interventions.simulate(1, shift)
        assert set(rates) == set(bench_interventions.INTERVENTIONS)
        assert all(v in (0.0, 1.0) for gaps in rates.values() for v in gaps.values())
    assert str(ROOT / "tests") not in sys.path          # tests/benchmarks would shadow benchmarks/ for later imports


def test_the_whole_audit_benchmark_runs_on_a_small_phantom():
    r = bench_audit.full_audit(n_per_group=5)
    assert r["rows"] > 0 and r["exact"] >= 1 and np.isfinite(r["seconds"])
