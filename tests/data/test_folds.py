"""Cross-validation folds: patient-disjoint, stratified, every image tested exactly once."""

from collections import Counter

import pytest

from embedkit.cli.app import main
from embedkit.data.folds import make_folds
from embedkit.errors import EmbedkitError
from embedkit.manifest import age_group, read_manifest


def test_folds_are_patient_disjoint_stratified_and_cover_every_image_once(tmp_path):
    from embedkit.data.phantom import PhantomSpec, make_phantom

    src = make_phantom(tmp_path / "p", PhantomSpec(per_group=25, size=16, seed=0))  # the demo's 600 images
    paths = make_folds(src, tmp_path / "f", k=5, seed=1)
    rounds = [read_manifest(p) for p in paths]  # read_manifest refuses a patient in two splits
    tested = Counter(r["image_id"] for m in rounds for r in m.rows if r["split"] == "test")
    assert set(tested.values()) == {1} and len(tested) == len(rounds[0])
    for k, m in enumerate(rounds):
        test = [r for r in m.rows if r["split"] == "test"]
        assert {r["fold"] for r in test} == {str(k)}
        # stratified: every class x sex x age cell is in every test fold, in near-equal numbers
        cells = Counter((r["label"], r["sex"], age_group(int(r["age"]))) for r in test)
        assert len(cells) == 24 and max(cells.values()) - min(cells.values()) <= 2
        n = Counter(r["split"] for r in m.rows)
        assert n["test"] / len(m.rows) == pytest.approx(0.2, abs=0.03)  # with k = 5: the paper's 7:1:2
        assert n["val"] / len(m.rows) == pytest.approx(0.1, abs=0.03)
        patients = {s: {r["patient_id"] for r in m.rows if r["split"] == s} for s in ("train", "val", "test")}
        assert not (patients["train"] & patients["test"]) and not (patients["val"] & patients["test"])


def test_folds_command_and_bad_k(phantom_dir, tmp_path, capsys):
    assert main(["data", "folds", "--manifest", str(phantom_dir / "manifest.csv"), "--out", str(tmp_path), "--k", "5"]) == 0
    assert len(list(tmp_path.glob("fold-*.csv"))) == 5 and "5 rounds" in capsys.readouterr().out
    assert main(["data", "folds", "--manifest", str(phantom_dir / "manifest.csv"), "--out", str(tmp_path), "--k", "1"]) == 2
    with pytest.raises(EmbedkitError, match="patients cannot fill"):
        make_folds(phantom_dir / "manifest.csv", tmp_path, k=10_000)
