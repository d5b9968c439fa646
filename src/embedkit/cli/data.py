"""`embedkit data nih|phantom`: build the manifests every other stage reads."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from embedkit.cli.console import console, errors, table
from embedkit.data.nih import CANDIDATE_CLASSES, build_nih
from embedkit.data.phantom import Bias, PhantomSpec, make_phantom
from embedkit.manifest import AGE_GROUPS, SEXES, STUDY_CLASSES, SPLITS, read_manifest, sex_age_groups

app = typer.Typer(help="Build manifests: NIH 6×200, CheXpert, MIMIC-CXR, PadChest, any CSV, the phantom; folds.",
                  no_args_is_help=True)


def _split_summary(manifest_path: Path) -> None:
    m = read_manifest(manifest_path)
    labels, splits, groups = m.column("label"), m.column("split"), m.column("sex_age")
    table(
        f"{manifest_path}: {len(m)} images, {len(set(m.column('patient_id')))} patients",
        ["class", *sex_age_groups(), *SPLITS],
        [
            [c, *(int(((labels == c) & (groups == g)).sum()) for g in sex_age_groups()),
             *(int(((labels == c) & (splits == s)).sum()) for s in SPLITS)]
            for c in m.classes
        ],
    )


@app.command("nih")
def nih(
    metadata: Path = typer.Option(..., exists=True, dir_okay=False, help="Data_Entry_2017_v2020.csv (or .gz, or the 2017 file)."),
    out: Path = typer.Option(..., help="Manifest CSV to write."),
    images: Optional[Path] = typer.Option(None, exists=True, file_okay=False, help="NIH images folder; every selected file is checked."),
    per_group: int = typer.Option(50, min=1, help="Images per (class, sex, age band) cell."),
    min_fraction: float = typer.Option(0.9, min=0.0, max=1.0, help="A cell needs at least this fraction of --per-group."),
    seed: int = typer.Option(0, min=0, help="Seed of the selection and the split."),
    classes: str = typer.Option(",".join(CANDIDATE_CLASSES), help="Comma-separated candidate classes."),
) -> None:
    """Select the paper's balanced NIH ChestX-ray14 subset and split it 7:1:2 by patient."""
    sel = build_nih(metadata, out, images=images, classes=tuple(c.strip() for c in classes.split(",")),
                    per_group=per_group, min_fraction=min_fraction, seed=seed)
    for w in sel.warnings:
        errors.print(f"[yellow]warning:[/] {w}")
    cells = [(s, b) for s in SEXES for b in AGE_GROUPS]
    table("candidate pools (single-label images)", ["class", *(f"{s}-{b}" for s, b in cells), "status"],
          [[c, *(sel.pools[c][k] for k in cells), "qualified" if c in sel.qualified else f"dropped: {sel.dropped[c]}"]
           for c in sel.pools])
    _split_summary(out)


@app.command("folds")
def folds(
    manifest: Path = typer.Option(..., "--manifest", exists=True, dir_okay=False, help="Manifest CSV (see README: Data)."),
    out: Path = typer.Option(..., file_okay=False, help="Folder for fold-<i>.csv, one manifest per round."),
    k: int = typer.Option(5, min=2, help="Number of folds (rounds); each image is tested exactly once."),
    val_share: float = typer.Option(0.125, min=0.01, max=0.99, help="Validation share of the non-test folds "
                                                                      "(1/8: with k=5 each round keeps 7:1:2)."),
    seed: int = typer.Option(0, min=0, help="Seed of the fold and split assignment."),
) -> None:
    """K patient-disjoint folds stratified by class x sex x age band, one manifest per round."""
    from embedkit.data.folds import make_folds

    paths = make_folds(manifest, out, k=k, seed=seed, val_share=val_share)
    for p in paths:
        _split_summary(p)
    console.print(f"{len(paths)} rounds: {', '.join(str(p) for p in paths)}", highlight=False)


@app.command("phantom")
def phantom(
    out: Path = typer.Option(..., file_okay=False, help="Folder for manifest.csv, images/ and phantom.json."),
    per_group: int = typer.Option(50, min=5, help="Images per (class, sex, age band) cell."),
    size: int = typer.Option(224, min=16, help="Image side in pixels."),
    seed: int = typer.Option(0, min=0, help="Seed of the generated images and the split."),
    bias: list[str] = typer.Option([], help="Plant unfairness: ATTR=GROUP:STRENGTH, e.g. sex=F:0.6 (repeatable)."),
    duplicates: int = typer.Option(0, min=0, help="Plant leakage: copy this many test images into train under new ids."),
) -> None:
    """Generate the phantom chest X-ray dataset (the embedded default for demo and tests)."""
    spec = PhantomSpec(per_group=per_group, size=size, seed=seed, classes=STUDY_CLASSES, bias=[Bias.parse(b) for b in bias],
                       duplicates=duplicates)
    path = make_phantom(out, spec)
    _split_summary(path)
    if spec.bias:
        console.print("planted bias: " + ", ".join(f"{b.attribute}={b.group} fainter by {b.strength:g}" for b in spec.bias))


def _sources() -> None:
    from embedkit.cli import sources

    app.command("chexpert")(sources.chexpert)
    app.command("mimic-cxr")(sources.mimic)
    app.command("padchest")(sources.padchest)
    app.command("csv")(sources.csv)


_sources()
