"""Any CSV: its columns mapped to the manifest's (``--columns path=File,label=Finding,sex=Gender``).

Mapped: ``image_id`` (default: the path), ``path`` (required), ``patient_id``, ``sex``, ``age``,
``label`` (one finding, or several separated by ``|`` as in NIH's Finding Labels) and ``split``
(optional; otherwise a patient split). Sex spellings M/F, Male/Female (any case) are read; every other
column is kept, so any of them can be a sensitive attribute.

The patient is the unit of every split and statistic, so it is never guessed silently: without a
``patient_id`` mapping the column is found by its usual names (``Patient ID``, ``subject_id``, ...) or the
table is refused. ``--columns patient_id=@image`` declares each image its own patient — an explicit
choice the manifest records in every row (``patient_id`` = ``image:<image id>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from embedkit.data.build import Labelling, Source, finish, images_option
from embedkit.data.registry import Builder, option, register
from embedkit.data.tables import read_table
from embedkit.errors import EmbedkitError
from embedkit.manifest import SPLITS

SEX = {"m": "M", "male": "M", "f": "F", "female": "F"}
TARGETS = ("image_id", "path", "patient_id", "sex", "age", "label", "split")
PATIENT_NAMES = ("patient_id", "patient id", "patientid", "patient", "subject_id", "subject id", "subjectid", "subject")
EACH_IMAGE = "@image"      # --columns patient_id=@image: every image its own patient (recorded as image:<id>)


def parse_columns(text: str) -> dict[str, str]:
    """'path=File,label=Finding' -> {'path': 'File', 'label': 'Finding'}; unmapped targets keep their name
    (``patient_id`` unmapped stays None: found by its usual names in the table)."""
    mapping = {t: t for t in TARGETS} | {"patient_id": None}
    for item in (p.strip() for p in text.split(",") if p.strip()):
        target, sep, source = item.partition("=")
        if not sep or target.strip() not in TARGETS:
            raise EmbedkitError(f"--columns {item!r}: write TARGET=COLUMN with TARGET one of {', '.join(TARGETS)}")
        mapping[target.strip()] = source.strip()
    return mapping


def _patient_column(path, header: list[str], mapped: str | None) -> str:
    """The table's patient column: as mapped, else the one with a usual name; else refuse, naming the fix."""
    if mapped == EACH_IMAGE or (mapped and mapped in header):
        return mapped
    if mapped:
        raise EmbedkitError(f"{path}: no column {mapped!r} for --columns patient_id={mapped}")
    found = [c for c in header if c.strip().lower() in PATIENT_NAMES]
    if found:
        return found[0]
    raise EmbedkitError(f"{path}: no patient column (looked for {', '.join(PATIENT_NAMES)}); name it with "
                        f"--columns patient_id=COLUMN, or declare every image its own patient with "
                        f"--columns patient_id={EACH_IMAGE}")


def read(path: str | Path, columns: dict[str, str], *, images: str | Path | None = None) -> tuple[list[Source], list[str]]:
    required = tuple(columns[t] for t in ("path", "sex", "age", "label"))
    table = read_table(path, required, f"a CSV with columns {', '.join(required)} (map others with --columns)")
    header = list(table[0][1]) if table else []
    columns = dict(columns, patient_id=_patient_column(path, header, columns.get("patient_id")))
    used = {columns[t] for t in TARGETS if columns[t] in header}
    rows, skipped = [], {"sex": [], "age": []}       # the lines left out, by reason
    for line, r in table:
        where = f"{path}, line {line}"
        sex = SEX.get(r[columns["sex"]].lower())
        if sex is None:
            skipped["sex"].append(line)
            continue
        try:
            age = int(float(r[columns["age"]]))
        except ValueError:
            skipped["age"].append(line)
            continue
        split = r.get(columns["split"], "").strip().lower()
        if split and split not in SPLITS:
            raise EmbedkitError(f"{where}, column '{columns['split']}': {split!r} is not train, val or test")
        found = {f.strip(): 1.0 for f in r[columns["label"]].split("|") if f.strip()}
        image_id = r.get(columns["image_id"]) or r[columns["path"]]
        file = r[columns["path"]]
        patient = f"image:{image_id}" if columns["patient_id"] == EACH_IMAGE else r[columns["patient_id"]]
        if not patient:
            raise EmbedkitError(f"{where}, column '{columns['patient_id']}': empty patient id")
        rows.append(Source(image_id=image_id, path=str(Path(images) / file) if images else file,
                           patient_id=patient, sex=sex, age=age, findings=found,
                           split=split, extra={k: v for k, v in r.items() if k not in used}))
    return rows, [f"{len(lines)} of {len(table)} row(s) left out: unreadable {why} (line {_first(lines)})"
                  for why, lines in skipped.items() if lines]


def _first(lines: list[int], shown: int = 5) -> str:
    return ", ".join(map(str, lines[:shown])) + (f" and {len(lines) - shown} more" if len(lines) > shown else "")


@dataclass(kw_only=True)
class Options(Labelling):
    table: Path = option(help="The CSV to read.", exists=True, dir_okay=False)
    columns: str = option("", help="TARGET=COLUMN pairs: image_id, path, patient_id, sex, age, label (several "
                                   "findings separated by |), split.")
    images: Optional[Path] = images_option()


def _run(opts: Options, out: Path):
    rows, notes = read(opts.table, parse_columns(opts.columns), images=opts.images)
    return finish(rows, notes, str(opts.table), opts, out)


register(Builder("csv", "Any CSV, its columns mapped to the manifest's; every other column kept as a possible "
                        "attribute.", Options, _run))
