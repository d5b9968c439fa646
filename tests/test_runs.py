import json

import numpy as np
import pytest

from embedkit.cli.app import main
from embedkit.errors import EmbedkitError
from embedkit.predictions import Predictions, read_predictions, write_predictions
from embedkit.runs import evaluate_predictions


def make_predictions(n_per_cell=5):
    rng = np.random.default_rng(0)
    classes = ("Edema", "Effusion", "Pneumothorax")
    label = np.repeat(classes, 4 * n_per_cell)
    sex = np.tile(np.repeat(["M", "F"], 2 * n_per_cell), 3)
    age = np.tile(np.repeat([30, 70, 30, 70], n_per_cell), 3)
    proba = rng.dirichlet(np.ones(3), len(label))
    split = np.where(np.arange(len(label)) % 5 == 0, "val", "test")
    return Predictions(np.array([f"i{i}" for i in range(len(label))]), split, label, proba, classes,
                       {"sex": sex, "age": age.astype(str)})


def test_round_trip_and_evaluate_cli(tmp_path, capsys):
    p = make_predictions()
    write_predictions(tmp_path / "predictions.csv", p)
    q = read_predictions(tmp_path / "predictions.csv")
    assert q.classes == p.classes and (q.label == p.label).all()
    np.testing.assert_allclose(q.proba, p.proba, rtol=1e-6)
    assert main(["evaluate", str(tmp_path / "predictions.csv"), "--json", "--n-boot", "50", "--n-perm", "50"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == evaluate_predictions(q, n_boot=50, n_perm=50)
    assert {"n", "accuracy", "f1", "f1_macro", "var_f1", "groups", "fairness", "ci", "null"} <= set(out)
    assert out["n"] == 48 and set(out["fairness"]) == {"sex", "age", "sex_age"}
    assert main(["evaluate", str(tmp_path / "predictions.csv"), "--n-boot", "20", "--n-perm", "20"]) == 0
    assert "fairness gaps" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "predictions.csv"), "--n-boot", "20", "--n-perm", "0"]) == 0
    assert "not tested: --n-perm 0" in capsys.readouterr().out


def test_bad_predictions_file(tmp_path):
    (tmp_path / "p.csv").write_text("image_id,split\n")
    with pytest.raises(EmbedkitError, match="not a predictions file"):
        read_predictions(tmp_path / "p.csv")
    with pytest.raises(EmbedkitError, match="no rows with split 'train'"):
        make_predictions().select("train")


def test_two_manifests_in_one_folder_never_share_a_run(phantom_dir, tmp_path, capsys):
    """The dataset part of a run path defaults to the manifest's folder: a second manifest there is
    refused (name it with --dataset), never written over the first one's results."""
    import csv

    src = phantom_dir / "manifest.csv"
    rows = list(csv.DictReader(src.open()))
    rows[0]["label"] = "Edema" if rows[0]["label"] != "Edema" else "Effusion"  # one relabelled image
    other = phantom_dir / "manifest-relabelled.csv"
    with other.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    try:
        cache, runs = str(tmp_path / "c"), str(tmp_path / "r")
        for m in (src, other):
            assert main(["extract", "--model", "clip-tiny", "--manifest", str(m), "--cache-dir", cache, "--quiet"]) == 0
        args = ["probe", "--model", "clip-tiny", "--head", "knn", "--cache-dir", cache, "--runs-dir", runs]
        assert main([*args, "--manifest", str(src)]) == 0
        before = (tmp_path / "r/phantom0/clip-tiny/knn/seed-0/predictions.csv").read_bytes()
        capsys.readouterr()
        assert main([*args, "--manifest", str(other)]) == 2
        assert "another manifest" in capsys.readouterr().err
        assert (tmp_path / "r/phantom0/clip-tiny/knn/seed-0/predictions.csv").read_bytes() == before
        assert main([*args, "--manifest", str(other), "--dataset", "relabelled"]) == 0
        assert (tmp_path / "r/relabelled/clip-tiny/knn/seed-0/run.json").is_file()
    finally:
        other.unlink()


def test_a_regenerated_manifest_makes_its_runs_stale_not_refused(phantom_dir, tmp_path):
    """The same manifest file with new content (a regenerated dataset) reruns its runs in place."""
    import csv

    rows = list(csv.DictReader((phantom_dir / "manifest.csv").open()))
    for r in rows:
        r["path"] = str(phantom_dir / r["path"])
    mine = tmp_path / "data" / "manifest.csv"
    mine.parent.mkdir()

    def write(rows):
        with mine.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)

    write(rows)
    args = ["probe", "--model", "clip-tiny", "--head", "knn", "--cache-dir", str(tmp_path / "c"), "--runs-dir",
            str(tmp_path / "r"), "--manifest", str(mine)]
    assert main(["extract", "--model", "clip-tiny", "--manifest", str(mine), "--cache-dir", str(tmp_path / "c"), "--quiet"]) == 0
    assert main(args) == 0
    record = tmp_path / "r/data/clip-tiny/knn/seed-0/run.json"
    first = json.loads(record.read_text())["manifest_digest"]
    rows[0]["label"] = "Edema" if rows[0]["label"] != "Edema" else "Effusion"
    write(rows)
    assert main(args) == 0
    assert json.loads(record.read_text())["manifest_digest"] != first


def test_evaluate_cli_any_attribute_with_three_groups_equals_an_oracle(tmp_path, capsys):
    """`embedkit evaluate PRED --attributes race --json` on a file with a race column: k-group gaps as the
    oracle of tests/metrics/test_groups.py computes them independently."""
    from tests.metrics.test_groups import _oracle, _run

    y, proba, race = _run(n=300, k=3)
    classes = ("a", "b", "c", "d")
    p = Predictions(np.array([f"i{i}" for i in range(300)]), np.array(["test"] * 300), np.array(classes)[y], proba,
                    classes, {"sex": np.array(["M", "F"] * 150), "age": np.array(["40"] * 300), "race": race})
    write_predictions(tmp_path / "predictions.csv", p)
    assert main(["evaluate", str(tmp_path / "predictions.csv"), "--attributes", "race", "--json", "--n-boot", "20",
                 "--n-perm", "20"]) == 0
    out = json.loads(capsys.readouterr().out)
    q = read_predictions(tmp_path / "predictions.csv")
    want = _oracle(y, q.proba.argmax(1), q.proba, race, tuple(sorted(set(race))), 4)
    assert set(out["fairness"]) == {"race"} and len(out["groups"]["race"]) == 3
    for gap, value in want.items():
        assert out["fairness"]["race"][gap] == pytest.approx(value, abs=1e-6)
    assert main(["evaluate", str(tmp_path / "predictions.csv"), "--attributes", "site"]) == 2
    assert "no column 'site'" in capsys.readouterr().err


def test_evaluations_are_cached_per_settings_file_and_code(tmp_path, monkeypatch):
    """The report and `embedkit results` evaluate a run once: the same settings on the same predictions file read
    the cached result; other settings, or a rewritten file, evaluate again."""
    import os

    from embedkit import evaluations, runs

    write_predictions(tmp_path / "predictions.csv", make_predictions())
    calls = []
    real = runs.evaluate_predictions
    monkeypatch.setattr(runs, "evaluate_predictions", lambda p, **kw: calls.append(kw) or real(p, **kw))
    first = evaluations.evaluate_folder(tmp_path, attributes="sex", n_boot=50, n_perm=50, seed=0)
    again = evaluations.evaluate_folder(tmp_path, attributes="sex", n_boot=50, n_perm=50, seed=0)
    assert len(calls) == 1 and again["fairness"] == first["fairness"] and again["ci"] == first["ci"]
    evaluations.evaluate_folder(tmp_path, threads=2, attributes="sex", n_boot=50, n_perm=50, seed=0)
    assert len(calls) == 1                               # threads change the speed, not the numbers: not in the key
    evaluations.evaluate_folder(tmp_path, threads=2, attributes="sex", n_boot=50, n_perm=50, seed=1)
    assert len(calls) == 2 and calls[-1]["threads"] == 2
    st = (tmp_path / "predictions.csv").stat()
    os.utime(tmp_path / "predictions.csv", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    evaluations.evaluate_folder(tmp_path, attributes="sex", n_boot=50, n_perm=50, seed=0)
    assert len(calls) == 3 and len(list((tmp_path / ".evaluations").glob("*.pkl"))) == 3


def test_cached_evaluations_depend_on_the_code_that_reads_and_scores_a_file():
    from embedkit import evaluations

    names = {f.name for f in evaluations.code_files()}
    assert {"predictions.py", "runs.py", "findings.py", "suite.py", "kernels.py", "resample.py"} <= names
