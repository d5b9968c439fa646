"""The paper's balanced NIH ChestX-ray14 subset ("NIH 6x200").

Selection rule: single-label images of the candidate classes; groups sex x age band;
N per (class, sex, age band) cell, a sex shortfall filled from the other sex of the same
band; classes without enough images dropped with the reason; seeded; patient-disjoint
stratified 7:1:2 split.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from embedkit.attributes import parse
from embedkit.data.build import balance, split_rows, split_table
from embedkit.data.registry import Builder, Summary, option, register
from embedkit.data.tables import open_text
from embedkit.errors import EmbedkitError
from embedkit.manifest import AGE_GROUPS, SEXES, write_manifest
from embedkit.spec import TASK

CANDIDATE_CLASSES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Pneumonia", "Pneumothorax")
REQUIRED = ("Image Index", "Finding Labels", "Patient ID", "Patient Age", "Patient Gender")
_AGE_2017 = re.compile(r"^(\d{1,3})([YMD])$")


@dataclass
class Selection:
    """What ``select_nih`` decided, for the summary table and the manifest."""

    rows: list[dict[str, object]]
    pools: dict[str, Counter]            # class -> Counter[(sex, band)] of candidates
    qualified: list[str]
    dropped: dict[str, str]              # class -> reason
    counts: dict[str, Counter]           # class -> Counter[(sex, band)] selected
    warnings: list[str] = field(default_factory=list)


def _parse_age(text: str) -> int | None:
    """Whole years from ``58`` (v2020) or ``058Y``/``006M``/``010D`` (2017); None when unusable."""
    text = text.strip()
    m = _AGE_2017.match(text)
    if m:
        value, unit = int(m.group(1)), m.group(2)
        return value if unit == "Y" else 0
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value >= 0 and value == int(value) else None


def read_nih_metadata(path: str | Path) -> tuple[list[dict[str, object]], list[str]]:
    """Parse ``Data_Entry_2017[_v2020].csv[.gz]`` into rows with int ages; returns (rows, warnings)."""
    path = Path(path)
    if not path.is_file():
        raise EmbedkitError(f"{path}: NIH metadata file not found (Data_Entry_2017_v2020.csv from the NIH box folder)")
    warnings: list[str] = []
    try:
        with open_text(path) as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise EmbedkitError(f"{path}: not an NIH metadata file, missing column(s) {', '.join(missing)}")
            raw = list(reader)
    except (UnicodeDecodeError, csv.Error, OSError, EOFError) as exc:
        raise EmbedkitError(f"{path}: not an NIH metadata CSV ({type(exc).__name__}); expected "
                            "Data_Entry_2017_v2020.csv (or .csv.gz)") from None
    old_format = any(_AGE_2017.match(r["Patient Age"].strip()) for r in raw[:1000])
    if old_format:
        warnings.append(
            f"{path.name} is the 2017 release (ages like '058Y'); its labels differ from the v2020 "
            "relabelling the paper used — prefer Data_Entry_2017_v2020.csv"
        )
    rows, bad = [], []
    for line, r in enumerate(raw, start=2):
        age = _parse_age(r["Patient Age"])
        sex = r["Patient Gender"].strip()
        if age is None or age > 120 or sex not in SEXES:
            bad.append(line)
            continue
        rows.append({"image": r["Image Index"], "labels": r["Finding Labels"].strip(), "patient": r["Patient ID"].strip(),
                     "age": age, "sex": sex, "view": r.get("View Position", "")})
    if bad:
        warnings.append(f"{len(bad)} row(s) skipped for an unusable age or sex (lines {', '.join(map(str, bad[:10]))}{'…' if len(bad) > 10 else ''})")
    return rows, warnings


def select_nih(
    rows: list[dict[str, object]],
    *,
    classes: tuple[str, ...] = CANDIDATE_CLASSES,
    per_group: int = 50,
    min_fraction: float = 0.9,
    seed: int = 0,
) -> Selection:
    """The paper's rule (the shared balanced selector over sex x age band, single-label images) and split."""
    labelled = [{"image_id": r["image"], "path": r["image"], "patient_id": r["patient"], "label": r["labels"],
                 "sex": r["sex"], "age": r["age"], "split": "", "view_position": r["view"]}
                for r in rows if r["labels"] in classes]   # single-label: Finding Labels is exactly the class
    sex, age = parse("sex,age")
    selected, report = balance(labelled, classes, sex, age, per_group=per_group, min_fraction=min_fraction, seed=seed)
    split_rows(selected, (sex, age), seed)
    return Selection(rows=selected, pools=report["pools"], qualified=list(report["counts"]), dropped=report["dropped"],
                     counts=report["counts"])


def build_nih(
    metadata: str | Path,
    out: str | Path,
    *,
    images: str | Path | None = None,
    classes: tuple[str, ...] = CANDIDATE_CLASSES,
    per_group: int = 50,
    min_fraction: float = 0.9,
    seed: int = 0,
) -> Selection:
    """Read the metadata, select, check image files (when ``images`` is given), write the manifest."""
    rows, warnings = read_nih_metadata(metadata)
    sel = select_nih(rows, classes=classes, per_group=per_group, min_fraction=min_fraction, seed=seed)
    sel.warnings = warnings + sel.warnings
    if not sel.qualified:
        raise EmbedkitError(f"{metadata}: no class qualified: " + "; ".join(f"{c}: {w}" for c, w in sel.dropped.items()))
    out = Path(out)
    if images is not None:
        images = Path(images).resolve()
        missing = [r["image_id"] for r in sel.rows if not (images / str(r["image_id"])).is_file()]
        if missing:
            shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
            raise EmbedkitError(f"{len(missing)} selected image(s) are missing under {images}: {shown}")
        for r in sel.rows:
            r["path"] = str(images / str(r["image_id"]))
    write_manifest(out, sel.rows, extra_columns=("view_position",))
    return sel


@dataclass(kw_only=True)
class Options:
    metadata: Path = option(help="Data_Entry_2017_v2020.csv (or .gz, or the 2017 file).", exists=True, dir_okay=False)
    images: Optional[Path] = option(None, help="NIH images folder; every selected file is checked.", exists=True,
                                    file_okay=False)
    per_group: int = option(50, help="Images per (class, sex, age band) cell.", min=1)
    min_fraction: float = option(0.9, help="A cell needs at least this fraction of --per-group.", min=0.0, max=1.0)
    seed: int = option(0, help="Seed of the selection and the split.", min=0)
    classes: str = option(",".join(CANDIDATE_CLASSES), help="Comma-separated candidate classes.")
    task: str = option(TASK.kind, help="multiclass: the paper's balanced single-label subset; multilabel: every image, "
                                       "its Finding Labels as findings (no balancing).")
    findings: str = option("", help="Multilabel: the findings to keep, comma-separated (default: all 14).")
    official_split: Optional[Path] = option(None, help="Multilabel: the folder with NIH's train_val_list.txt and "
                                                       "test_list.txt (val: 1/8 of the train_val patients).",
                                            exists=True, file_okay=False)


def _run(opts: Options, out: Path) -> Summary:
    if opts.task != "multiclass":
        return _multilabel(opts, out)
    if opts.official_split:
        raise EmbedkitError("--official-split is for --task multilabel (the paper's subset has its own 7:1:2 split)")
    sel = build_nih(opts.metadata, out, images=opts.images, classes=tuple(c.strip() for c in opts.classes.split(",")),
                    per_group=opts.per_group, min_fraction=opts.min_fraction, seed=opts.seed)
    cells = [(s, b) for s in SEXES for b in AGE_GROUPS]
    pools = ("candidate pools (single-label images)", ["class", *(f"{s}-{b}" for s, b in cells), "status"],
             [[c, *(sel.pools[c][k] for k in cells), "qualified" if c in sel.qualified else f"dropped: {sel.dropped[c]}"]
              for c in sel.pools])
    return Summary(Path(out), warnings=sel.warnings, tables=[pools, split_table(Path(out))])


def _multilabel(opts: Options, out: Path) -> Summary:
    """Every image of the metadata with its Finding Labels: the official split when given, else by patient."""
    from embedkit.data.build import Labelling, Source, finish
    from embedkit.tasks import findings_of

    rows, warnings = read_nih_metadata(opts.metadata)
    root = Path(opts.images).resolve() if opts.images else None
    sources = [Source(image_id=r["image"], path=str(root / r["image"]) if root else r["image"], patient_id=r["patient"],
                      sex=r["sex"], age=r["age"], findings={f: 1.0 for f in findings_of(r["labels"])},
                      extra={"view_position": r["view"]}) for r in rows]
    if opts.official_split:
        _official(sources, Path(opts.official_split), opts.seed)
    labelling = Labelling(task=opts.task, findings=opts.findings, seed=opts.seed,
                          split="official" if opts.official_split else "patient")
    summary = finish(sources, [], str(opts.metadata), labelling, out)
    summary.warnings += warnings
    return summary


def _official(sources: list, folder: Path, seed: int) -> None:
    """NIH's official split: test from test_list.txt; train_val_list.txt's patients split 7:1 into train and val."""
    import numpy as np

    lists = {}
    for name in ("train_val_list.txt", "test_list.txt"):
        if not (folder / name).is_file():
            raise EmbedkitError(f"{folder}: no {name} (NIH's official split lists)")
        lists[name] = {line.strip() for line in (folder / name).read_text().splitlines() if line.strip()}
    patients = sorted({s.patient_id for s in sources if s.image_id in lists["train_val_list.txt"]})
    val = set(np.asarray(patients)[np.random.default_rng(seed).permutation(len(patients))[: len(patients) // 8]])
    for s in sources:
        s.split = ("test" if s.image_id in lists["test_list.txt"] else
                   ("val" if s.patient_id in val else "train") if s.image_id in lists["train_val_list.txt"] else "")


register(Builder("nih", "Select the paper's balanced NIH ChestX-ray14 subset and split it 7:1:2 by patient.", Options, _run))
