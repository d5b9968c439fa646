"""The builders on real metadata files that torchxrayvision ships (installed by `make setup` for its data
files only): NIH's v2020 Data_Entry, PadChest's labels file, CheXpert's train.csv."""

import importlib.util
from pathlib import Path

import pytest

from embedkit.data import chexpert, padchest
from embedkit.data.build import build
from embedkit.data.nih import build_nih
from embedkit.manifest import STUDY_CLASSES, read_manifest

pytestmark = pytest.mark.slow


def shipped(name: str) -> Path:
    spec = importlib.util.find_spec("torchxrayvision")   # located, not imported (its own dependencies are not installed)
    assert spec is not None, "run `make setup`: it installs torchxrayvision's data files"
    return Path(spec.submodule_search_locations[0]) / "data" / name


def test_nih_v2020_gives_the_papers_subset(tmp_path):
    sel = build_nih(shipped("Data_Entry_2017_v2020.csv.gz"), tmp_path / "nih.csv")
    assert sel.qualified == list(STUDY_CLASSES) and "Pneumonia" in sel.dropped
    assert sel.counts["Edema"][("M", "old")] == 53 and sel.counts["Edema"][("F", "old")] == 47
    assert len(read_manifest(tmp_path / "nih.csv")) == 1200


def test_padchest_labels_file_builds_a_balanced_manifest(tmp_path):
    sources, notes = padchest.read(shipped("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"))
    assert 100_000 < len(sources) < 110_633                  # the frontal projections, less unusable rows
    built = build(sources, tmp_path / "padchest.csv", classes=("Cardiomegaly", "Effusion", "Pneumonia"), balanced=50)
    m = read_manifest(tmp_path / "padchest.csv")
    assert len(m) == 600 and set(m.classes) == {"Cardiomegaly", "Effusion", "Pneumonia"}
    assert {"projection", "study_year"} <= set(m.extra_columns) and not built.balanced["dropped"]


def test_chexpert_train_csv_with_each_uncertainty_policy(tmp_path):
    sources, _ = chexpert.read([shipped("chexpert_train.csv.gz")])
    sizes = {u: len(build(sources, tmp_path / f"{u}.csv", classes=("Edema", "Effusion", "Cardiomegaly"),
                          policy="single-in-classes", uncertain=u).rows) for u in ("ignore", "zeros", "ones")}
    assert sizes["ignore"] < sizes["zeros"] and sizes["ignore"] > 10_000


def test_nih_v2020_as_a_multilabel_manifest(tmp_path):
    from embedkit.data.build import Labelling, Source, finish
    from embedkit.data.nih import read_nih_metadata
    from embedkit.tasks import findings_of

    rows, _ = read_nih_metadata(shipped("Data_Entry_2017_v2020.csv.gz"))
    sources = [Source(r["image"], r["image"], r["patient"], r["sex"], r["age"], {f: 1.0 for f in findings_of(r["labels"])})
               for r in rows]
    finish(sources, [], "nih", Labelling(task="multilabel"), tmp_path / "ml.csv")
    m = read_manifest(tmp_path / "ml.csv")
    assert len(m) == 112120 and (m.column("label") == "No Finding").sum() == 60361
