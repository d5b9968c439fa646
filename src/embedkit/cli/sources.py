"""`embedkit data chexpert|mimic-cxr|padchest|csv`: manifests from published metadata files, with an
explicit label policy, an optional balanced selection and a patient (or official) split.

Each command reads its source (returning the rows, notes and the file to name in errors); ``builder``
adds the options every source shares and writes the manifest."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Optional

import typer

from embedkit.cli.console import console, errors, table
from embedkit.manifest import STUDY_CLASSES


def _classes(text: str) -> tuple[str, ...]:
    items = tuple(c.strip() for c in text.split(",") if c.strip())
    if not items:
        raise typer.BadParameter("give at least one class")
    return items


def _shared() -> list[inspect.Parameter]:
    """The options every source builder takes (one declaration, the same everywhere)."""
    from embedkit.data.build import LABEL_POLICIES, UNCERTAIN_POLICIES

    options = [
        ("out", Path, typer.Option(..., dir_okay=False, help="Manifest CSV to write.")),
        ("classes", str, typer.Option(",".join(STUDY_CLASSES), callback=_classes,
                                      help="Comma-separated classes (findings) to keep.")),
        ("label_policy", str, typer.Option("single", help="; ".join(f"{k}: {v}" for k, v in LABEL_POLICIES.items()))),
        ("uncertain", str, typer.Option("ignore", help="; ".join(f"{k}: {v}" for k, v in UNCERTAIN_POLICIES.items()))),
        ("balanced", Optional[int], typer.Option(None, min=1, help="Select N images per (class x group) cell, as the "
                                                                   "paper's NIH subset.")),
        ("balance_on", str, typer.Option("sex,age", help="One or two attributes the balanced cells use (the first is "
                                                         "filled from its other groups when short).")),
        ("min_fraction", float, typer.Option(0.9, min=0.0, max=1.0, help="A balanced cell needs this fraction of N.")),
        ("split", str, typer.Option("patient", help="patient (7:1:2, patient-disjoint, stratified) or official.")),
        ("seed", int, typer.Option(0, min=0, help="Seed of the selection and the split.")),
    ]
    return [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=t) for n, t, d in options]


def builder(read):
    """A command from ``read(**its own options) -> (sources, notes, where)`` plus the shared options."""
    own = list(inspect.signature(read).parameters.values())
    shared = _shared()

    @functools.wraps(read)
    def command(**kw):
        sources, notes, where = read(**{p.name: kw[p.name] for p in own})
        _finish(sources, notes, where=where, **{p.name: kw[p.name] for p in shared})

    command.__signature__ = inspect.Signature(own + shared)
    return command


def _finish(sources, notes, *, out, classes, label_policy, uncertain, balanced, balance_on, min_fraction, split, seed,
            where) -> None:
    from embedkit.data.build import build

    built = build(sources, out, classes=classes, policy=label_policy, uncertain=uncertain, balanced=balanced,
                  balance_on=balance_on, min_fraction=min_fraction, split=split, seed=seed, where=where)
    for n in notes + [f"{v} image(s) left out: {k}" for k, v in built.dropped.items()]:
        errors.print(f"[yellow]note:[/] {n}", highlight=False)
    if built.balanced:
        for c, why in built.balanced["dropped"].items():
            errors.print(f"[yellow]dropped class {c}:[/] {why}", highlight=False)
    labels = [r["label"] for r in built.rows]
    table(f"{out}: {len(built.rows)} images kept of {built.read} usable rows read", ["class", "images", "train", "val", "test"],
          [[c, labels.count(c), *(sum(1 for r in built.rows if r["label"] == c and r["split"] == s)
                                  for s in ("train", "val", "test"))] for c in classes])
    console.print(f"manifest: {out}", highlight=False)


def _images_option():
    return typer.Option(None, exists=True, file_okay=False, help="Images root; manifest paths are made absolute.")


@builder
def chexpert(
    labels: list[Path] = typer.Option(..., "--labels", exists=True, dir_okay=False, help="train.csv and/or valid.csv (repeatable)."),
    demographics: Optional[Path] = typer.Option(None, exists=True, dir_okay=False,
                                                help="CHEXPERT DEMO.xlsx (or its CSV): adds race and ethnicity."),
    views: str = typer.Option("Frontal", help="Frontal/Lateral values to keep (comma-separated)."),
    images: Optional[Path] = _images_option(),
):
    """CheXpert: the labeler's 14 observations, an explicit policy for uncertain labels, frontal views."""
    from embedkit.data import chexpert as source

    rows, notes = source.read(labels, demographics=demographics, views=tuple(views.split(",")), images=images)
    return rows, notes, str(labels[0])


@builder
def mimic(
    metadata: Path = typer.Option(..., exists=True, dir_okay=False, help="mimic-cxr-2.0.0-metadata.csv[.gz]."),
    labels: Path = typer.Option(..., "--labels", exists=True, dir_okay=False, help="mimic-cxr-2.0.0-chexpert.csv[.gz]."),
    patients: Path = typer.Option(..., exists=True, dir_okay=False, help="MIMIC-IV patients.csv[.gz] (sex, anchor age)."),
    admissions: Optional[Path] = typer.Option(None, exists=True, dir_okay=False,
                                              help="MIMIC-IV admissions.csv[.gz]: adds race and insurance."),
    official_split: Optional[Path] = typer.Option(None, exists=True, dir_okay=False,
                                                  help="mimic-cxr-2.0.0-split.csv[.gz] (use with --split official)."),
    views: str = typer.Option("PA,AP", help="ViewPosition values to keep (comma-separated)."),
    images: Optional[Path] = _images_option(),
):
    """MIMIC-CXR-JPG with MIMIC-IV sex, age, race and insurance; frontal views."""
    from embedkit.data import mimic as source

    rows, notes = source.read(metadata, labels, patients, split=official_split, admissions=admissions,
                              views=tuple(views.split(",")), images=images)
    return rows, notes, str(metadata)


@builder
def padchest(
    metadata: Path = typer.Option(..., exists=True, dir_okay=False,
                                  help="PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv[.gz]."),
    projections: str = typer.Option("PA,AP,AP_horizontal", help="Projection values to keep (comma-separated)."),
    images: Optional[Path] = _images_option(),
):
    """PadChest: sex, age from study date and birth year, findings from the Labels list; PA/AP projections."""
    from embedkit.data import padchest as source

    rows, notes = source.read(metadata, projections=tuple(projections.split(",")))
    for r in rows if images is not None else ():
        r.path = str(images / r.path)
    return rows, notes, str(metadata)


@builder
def csv(
    table_file: Path = typer.Option(..., "--table", exists=True, dir_okay=False, help="The CSV to read."),
    columns: str = typer.Option("", help="TARGET=COLUMN pairs: image_id, path, patient_id, sex, age, label (several "
                                         "findings separated by |), split."),
    images: Optional[Path] = _images_option(),
):
    """Any CSV, its columns mapped to the manifest's; every other column kept as a possible attribute."""
    from embedkit.data import csvfile as source

    rows, notes = source.read(table_file, source.parse_columns(columns), images=images)
    return rows, notes, str(table_file)
