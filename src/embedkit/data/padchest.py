"""PadChest (BIMCV, Bustos et al. 2020) from its labels file,
``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv[.gz]``.

Sex from ``PatientSex_DICOM`` (M, F; others left out), age in years from ``StudyDate_DICOM``
(YYYYMMDD) minus ``PatientBirth`` (a year), findings from ``Labels`` (a Python list literal of
lower-case terms, e.g. ``['pleural effusion', 'cardiomegaly']``), frontal projections by default
(``Projection`` PA, AP, AP_horizontal). Images lie in ``<images>/<ImageDir>/<ImageID>``. A class
is matched to PadChest terms by ``TERMS`` — a term and the subtypes under it ("laminar atelectasis" is
Atelectasis; "pericardial effusion" is not Effusion) — or by ``--class-map Class=term|term,...``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from embedkit.data.build import Labelling, Source, finish, images_option
from embedkit.data.registry import Builder, option, register
from embedkit.data.tables import read_table
from embedkit.errors import EmbedkitError

COLUMNS = ("ImageID", "ImageDir", "StudyDate_DICOM", "PatientID", "PatientBirth", "PatientSex_DICOM", "Projection", "Labels")
FRONTAL = ("PA", "AP", "AP_horizontal")
TERMS = {"Atelectasis": ("atelectasis", "laminar atelectasis", "lobar atelectasis", "segmental atelectasis",
                         "round atelectasis", "total atelectasis", "atelectasis basal"),
         "Cardiomegaly": ("cardiomegaly",), "Consolidation": ("consolidation",), "Edema": ("pulmonary edema",),
         "Effusion": ("pleural effusion", "loculated pleural effusion", "loculated fissural effusion"),
         "Pneumothorax": ("pneumothorax", "hydropneumothorax"), "Pneumonia": ("pneumonia", "atypical pneumonia"),
         "No Finding": ("normal",)}                # each class with the subtypes PadChest's label tree puts under it
EXCLUDED_TERMS = ("exclude", "suboptimal study")


def read(metadata: str | Path, *, projections: tuple[str, ...] = FRONTAL,
         terms: dict[str, tuple[str, ...]] | None = None) -> tuple[list[Source], list[str]]:
    """Every usable image of the labels file as a Source (findings keyed by class); returns (rows, notes)."""
    terms = {**TERMS, **(terms or {})}
    table = read_table(metadata, COLUMNS, "a PadChest labels file (PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv)")
    rows, skipped = [], {"projection": 0, "sex": 0, "age": 0, "labels": 0, "excluded": 0}
    for line, r in table:
        if r["Projection"] not in projections:
            skipped["projection"] += 1
            continue
        if r["PatientSex_DICOM"] not in ("M", "F"):
            skipped["sex"] += 1
            continue
        age = _age(r["StudyDate_DICOM"], r["PatientBirth"])
        found = _labels(r["Labels"])
        if age is None:
            skipped["age"] += 1
            continue
        if found is None:
            skipped["labels"] += 1
            continue
        if found & set(EXCLUDED_TERMS):
            skipped["excluded"] += 1
            continue
        findings = {c: 1.0 if found & set(t) else 0.0 for c, t in terms.items()}
        findings["(other)"] = 1.0 if found - {t for ts in terms.values() for t in ts} - {"normal"} else 0.0
        rows.append(Source(image_id=r["ImageID"], path=f"{r['ImageDir']}/{r['ImageID']}", patient_id=r["PatientID"],
                           sex=r["PatientSex_DICOM"], age=age, findings=findings,
                           extra={"projection": r["Projection"], "study_year": r["StudyDate_DICOM"][:4]}))
    notes = [f"{n} image(s) left out: {why}" for why, n in skipped.items() if n]
    if not rows:
        raise EmbedkitError(f"{metadata}: no usable image (" + "; ".join(notes) + ")")
    return rows, notes


def _age(study_date: str, birth: str) -> int | None:
    try:
        age = int(study_date.strip()[:4]) - int(float(birth))
    except ValueError:
        return None
    return age if 0 <= age <= 120 else None


def _labels(text: str) -> set[str] | None:
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return None
    if not isinstance(value, list):
        return None
    return {str(v).strip().lower() for v in value if str(v).strip()}      # 'COPD signs' as 'copd signs'


@dataclass(kw_only=True)
class Options(Labelling):
    metadata: Path = option(help="PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv[.gz].", exists=True,
                            dir_okay=False)
    projections: str = option(",".join(FRONTAL), help="Projection values to keep (comma-separated).")
    class_map: str = option("", help="Classes matched to PadChest terms, beside or instead of the built-in ones: "
                                     "Class=term|term,... (e.g. 'Nodule=nodule|multiple nodules,Mass=mass').")
    images: Optional[Path] = images_option()


def class_map(text: str) -> dict[str, tuple[str, ...]]:
    """``'Nodule=nodule|multiple nodules,Mass=mass'`` -> {class: terms}."""
    out = {}
    for item in (i.strip() for i in text.split(",") if i.strip()):
        name, _, terms = item.partition("=")
        found = tuple(t.strip().lower() for t in terms.split("|") if t.strip())
        if not name.strip() or not found:
            raise EmbedkitError(f"--class-map {item!r}: write Class=term or Class=term|term, e.g. Nodule=nodule")
        out[name.strip()] = found
    return out


def _run(opts: Options, out: Path):
    rows, notes = read(opts.metadata, projections=tuple(opts.projections.split(",")), terms=class_map(opts.class_map))
    for r in rows if opts.images is not None else ():
        r.path = str(opts.images / r.path)
    return finish(rows, notes, str(opts.metadata), opts, out)


register(Builder("padchest", "PadChest: sex, age from study date and birth year, findings from the Labels list; "
                             "PA/AP projections.", Options, _run))
