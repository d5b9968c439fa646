"""`embedkit data nih|phantom`: build the manifests every other stage reads."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from embedkit.cli.console import console, errors, table
from embedkit.data.nih import CANDIDATE_CLASSES, build_nih
from embedkit.data.phantom import Bias, PhantomSpec, make_phantom
from embedkit.manifest import AGE_GROUPS, SEXES, STUDY_CLASSES, SPLITS, read_manifest, sex_age_groups

app = typer.Typer(help="Build manifests: the NIH 6×200 subset or the phantom dataset.", no_args_is_help=True)


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


@app.command("phantom")
def phantom(
    out: Path = typer.Option(..., file_okay=False, help="Folder for manifest.csv, images/ and phantom.json."),
    per_group: int = typer.Option(50, min=5, help="Images per (class, sex, age band) cell."),
    size: int = typer.Option(224, min=16, help="Image side in pixels."),
    seed: int = typer.Option(0, min=0, help="Seed of the generated images and the split."),
    bias: list[str] = typer.Option([], help="Plant unfairness: ATTR=GROUP:STRENGTH, e.g. sex=F:0.6 (repeatable)."),
) -> None:
    """Generate the phantom chest X-ray dataset (the embedded default for demo and tests)."""
    spec = PhantomSpec(per_group=per_group, size=size, seed=seed, classes=STUDY_CLASSES, bias=[Bias.parse(b) for b in bias])
    path = make_phantom(out, spec)
    _split_summary(path)
    if spec.bias:
        console.print("planted bias: " + ", ".join(f"{b.attribute}={b.group} fainter by {b.strength:g}" for b in spec.bias))
