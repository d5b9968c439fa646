"""The NIH 6x200 selection rule on small synthetic metadata files in both formats."""

import csv
import gzip
from collections import Counter

import pytest

from embedkit.data.nih import build_nih, read_nih_metadata, select_nih
from embedkit.errors import EmbedkitError
from embedkit.manifest import read_manifest

HEADER = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender", "View Position"]


def make_rows(old_format=False):
    """Per class and cell counts chosen to hit every branch of the rule (N = 4)."""
    plan = {
        # class: {(sex, band): n}
        "Edema": {("M", "young"): 6, ("F", "young"): 6, ("M", "old"): 7, ("F", "old"): 4},   # old F short: fill from M
        "Effusion": {("M", "young"): 5, ("F", "young"): 5, ("M", "old"): 5, ("F", "old"): 5},
        "Pneumonia": {("M", "young"): 5, ("F", "young"): 5, ("M", "old"): 2, ("F", "old"): 2},  # fails
    }
    rows, i = [], 0
    for label, cells in plan.items():
        for (sex, band), n in cells.items():
            for k in range(n):
                age = 30 + k if band == "young" else 65 + k
                patient = f"{i // 2:05d}"  # two images per patient
                rows.append([f"{i:08d}_000.png", label, k, patient, f"{age:03d}Y" if old_format else age, sex, "PA"])
                i += 1
    rows.append([f"{i:08d}_000.png", "Edema|Effusion", 0, "99999", 40, "M", "AP"])  # multi-label: ignored
    rows.append([f"{i + 1:08d}_000.png", "Edema", 0, "99998", "412" if not old_format else "412Y", "M", "AP"])  # bad age
    return rows


def write(path, rows, gz=False):
    opener = gzip.open(path, "wt", newline="") if gz else open(path, "w", newline="")
    with opener as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        w.writerows(rows)
    return path


@pytest.mark.parametrize("old_format, gz", [(False, False), (True, False), (False, True)])
def test_both_formats_and_gzip(tmp_path, old_format, gz):
    path = write(tmp_path / ("meta.csv.gz" if gz else "meta.csv"), make_rows(old_format), gz)
    rows, warnings = read_nih_metadata(path)
    assert len(rows) == 58  # 57 single-label + 1 multi-label; the 412-year-old is skipped
    assert any("unusable age" in w for w in warnings)
    assert any("2017 release" in w for w in warnings) == old_format
    assert {r["age"] for r in rows} >= {30, 65}


def test_selection_rule_branches(tmp_path):
    rows, _ = read_nih_metadata(write(tmp_path / "m.csv", make_rows()))
    sel = select_nih(rows, classes=("Edema", "Effusion", "Pneumonia"), per_group=4, min_fraction=0.75, seed=0)
    assert sel.qualified == ["Edema", "Effusion"]
    assert "old has 4 < 8 images" in sel.dropped["Pneumonia"]
    assert sel.counts["Edema"] == Counter({("M", "young"): 4, ("F", "young"): 4, ("M", "old"): 4, ("F", "old"): 4})
    # A shortfall: with N = 5, old F has 4, so old M gives 6.
    sel5 = select_nih(rows, classes=("Edema",), per_group=5, min_fraction=0.8, seed=0)
    assert sel5.counts["Edema"][("F", "old")] == 4 and sel5.counts["Edema"][("M", "old")] == 6
    # Deterministic for a seed, and the seed matters.
    again = select_nih(rows, classes=("Edema", "Effusion"), per_group=4, min_fraction=0.75, seed=0)
    assert [r["image_id"] for r in again.rows] == [r["image_id"] for r in sel.rows if r["label"] != "Pneumonia"]


def test_build_writes_a_valid_patient_disjoint_manifest(tmp_path):
    meta = write(tmp_path / "m.csv", make_rows())
    build_nih(meta, tmp_path / "out.csv", classes=("Edema", "Effusion", "Pneumonia"), per_group=4, min_fraction=0.75)
    m = read_manifest(tmp_path / "out.csv")  # raises if a patient spans splits
    assert len(m) == 32 and set(m.column("split")) == {"train", "val", "test"}
    assert m.rows[0]["path"] == m.rows[0]["image_id"]


def test_missing_images_are_listed(tmp_path):
    meta = write(tmp_path / "m.csv", make_rows())
    (tmp_path / "img").mkdir()
    with pytest.raises(EmbedkitError, match=r"32 selected image\(s\) are missing under .*img: 0000000\d_000.png, "):
        build_nih(meta, tmp_path / "out.csv", images=tmp_path / "img", classes=("Edema", "Effusion"), per_group=4, min_fraction=0.75)
    assert not (tmp_path / "out.csv").exists()


def test_not_nih_metadata(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(EmbedkitError, match="missing column"):
        read_nih_metadata(tmp_path / "x.csv")


def test_multilabel_keeps_every_image_and_follows_the_official_lists(tmp_path):
    from embedkit.cli.app import main

    meta = write(tmp_path / "m.csv", make_rows())
    ids = [r[0] for r in make_rows()][:-1]                       # the bad-age row is left out by the reader
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "test_list.txt").write_text("\n".join(ids[:12]) + "\n")
    (lists / "train_val_list.txt").write_text("\n".join(ids[12:]) + "\n")
    out = tmp_path / "ml.csv"
    assert main(["data", "nih", "--metadata", str(meta), "--task", "multilabel", "--official-split", str(lists),
                 "--out", str(out)]) == 0
    m = read_manifest(out)
    assert len(m) == len(ids) and set(m.column("split")[:12]) == {"test"} and "val" in set(m.column("split"))
    assert "Edema|Effusion" in set(m.column("label"))           # the multi-label image is kept, not ignored
    by_patient = {}
    for p, s in zip(m.column("patient_id"), m.column("split")):
        by_patient.setdefault(p, set()).add(s)
    assert all(len(s) == 1 for p, s in by_patient.items() if "test" not in s)   # train/val never share a patient
    assert main(["data", "nih", "--metadata", str(meta), "--official-split", str(lists), "--out", str(tmp_path / "x.csv")]) == 2
