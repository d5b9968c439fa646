"""The manifest: one CSV row per image, the contract between every stage.

Required columns: image_id, path, patient_id, label, split. ``sex`` and ``age`` are the usual sensitive
attributes: a manifest without one of them (or with an empty value on some rows) is read, and each attribute
leaves out the rows it has no value for. Extra columns are kept. Derived attributes: ``age_group``
(young < 60 <= old) and ``sex_age`` (e.g. ``M-young``), empty where a part is missing.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedkit.attributes import AGE_BANDS, OLD_AGE, SEXES
from embedkit.errors import EmbedkitError

COLUMNS = ("image_id", "path", "patient_id", "label", "sex", "age", "split")     # the canonical order
REQUIRED = ("image_id", "path", "patient_id", "label", "split")
OPTIONAL = ("sex", "age")            # read as empty (missing) when the manifest has no such column
AGE_GROUPS = AGE_BANDS               # the paper's age bands, declared once in embedkit.attributes
SPLITS = ("train", "val", "test")
# The paper's six classes, in the order every table uses.
STUDY_CLASSES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Pneumothorax")


def age_group(age: int | str) -> str:
    """The paper's age band: young below 60, old from 60 ('' for a missing age)."""
    if age == "":
        return ""
    return "old" if int(age) >= OLD_AGE else "young"


def sex_age_groups() -> tuple[str, ...]:
    """The four intersectional groups, in a fixed order."""
    return tuple(f"{s}-{a}" for s in SEXES for a in AGE_GROUPS)


@dataclass
class Manifest:
    """Validated manifest rows plus the class list; columns come back as numpy arrays."""

    path: Path
    rows: list[dict[str, str]]
    classes: tuple[str, ...]
    extra_columns: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> np.ndarray:
        """A column as an array; ``age`` is int, derived ``age_group``/``sex_age`` are computed."""
        if name == "age":
            values = [r["age"] for r in self.rows]
            return np.array([int(v) for v in values], dtype=np.int64) if all(values) else np.array(values)
        if name == "age_group":
            return np.array([age_group(r["age"]) for r in self.rows])
        if name == "sex_age":
            return np.array([f"{r['sex']}-{age_group(r['age'])}" if r["sex"] and r["age"] else "" for r in self.rows])
        return np.array([r[name] for r in self.rows])

    def labels(self) -> np.ndarray:
        """Class indices into ``classes``."""
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[r["label"]] for r in self.rows], dtype=np.int64)

    def image_path(self, row: dict[str, str]) -> Path:
        """The row's image file: absolute, or relative to the manifest's folder."""
        p = Path(row["path"])
        return p if p.is_absolute() else self.path.parent / p

    def digest(self) -> str:
        """SHA-256 over the rows as read (column order fixed), for cache keys."""
        h = hashlib.sha256()
        cols = COLUMNS + self.extra_columns
        for r in self.rows:
            h.update("\x1f".join(r[c] for c in cols).encode())
            h.update(b"\x1e")
        return h.hexdigest()


def _fail(path: Path, line: int | None, column: str | None, what: str) -> EmbedkitError:
    where = f"{path}"
    if line is not None:
        where += f", line {line}"
    if column is not None:
        where += f", column '{column}'"
    return EmbedkitError(f"{where}: {what}")


def _check_row(path: Path, line: int, row: dict[str, str], classes: tuple[str, ...] | None) -> None:
    for col in REQUIRED:
        if not (row.get(col) or "").strip():
            raise _fail(path, line, col, "is empty; every row needs a value here")
    for col in OPTIONAL:
        row[col] = (row.get(col) or "").strip()
    if row["sex"] and row["sex"] not in SEXES:
        raise _fail(path, line, "sex", f"unknown sex code {row['sex']!r}; use one of {', '.join(SEXES)} "
                                       "(or leave it empty when unknown)")
    if row["age"]:
        try:
            age = float(row["age"])
        except ValueError:
            raise _fail(path, line, "age", f"{row['age']!r} is not a number; give whole years") from None
        if age < 0 or age != int(age):
            raise _fail(path, line, "age", f"{row['age']!r} is not a whole, non-negative number of years")
        row["age"] = str(int(age))
    if row["split"] not in SPLITS:
        raise _fail(path, line, "split", f"unknown split {row['split']!r}; use one of {', '.join(SPLITS)}")
    if classes is not None and row["label"] not in classes:
        raise _fail(path, line, "label", f"{row['label']!r} is not one of the classes {', '.join(classes)}")


def read_manifest(
    path: str | Path, *, classes: tuple[str, ...] | None = None, check_files: bool = False
) -> Manifest:
    """Read and validate a manifest; any problem raises EmbedkitError naming row and column.

    ``classes`` fixes the class list (and order); by default it is the sorted labels found.
    """
    path = Path(path)
    if not path.is_file():
        raise EmbedkitError(f"{path}: manifest not found; build one with `embedkit data nih` or `embedkit data phantom`")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = tuple(reader.fieldnames or ())
            if not header:
                raise _fail(path, None, None, "is empty; a manifest starts with the header "
                                              f"{','.join(COLUMNS)}")
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise _fail(path, 1, None, f"missing column(s) {', '.join(missing)}; required: {', '.join(REQUIRED)}")
            rows = [dict(r) for r in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise EmbedkitError(f"{path}: not a UTF-8 CSV text file ({type(exc).__name__}); a manifest is a CSV with "
                            f"columns {', '.join(COLUMNS)}") from None
    if not rows:
        raise _fail(path, None, None, "has no rows")
    seen: dict[str, int] = {}
    patient_split: dict[str, tuple[str, int]] = {}
    for i, row in enumerate(rows):
        line = i + 2  # header is line 1
        if None in row:
            raise _fail(path, line, None, "has more fields than the header")
        _check_row(path, line, row, classes)
        if row["image_id"] in seen:
            raise _fail(path, line, "image_id", f"duplicate {row['image_id']!r} (first on line {seen[row['image_id']]})")
        seen[row["image_id"]] = line
        first = patient_split.setdefault(row["patient_id"], (row["split"], line))
        if first[0] != row["split"]:
            raise _fail(
                path, line, "split",
                f"patient {row['patient_id']!r} is in '{row['split']}' here but in '{first[0]}' on line {first[1]}; "
                "a patient must stay in one split",
            )
    manifest = Manifest(
        path=path,
        rows=rows,
        classes=tuple(classes) if classes is not None else tuple(sorted({r["label"] for r in rows})),
        extra_columns=tuple(c for c in header if c not in COLUMNS),
    )
    if check_files:
        absent = [(i + 2, r["path"]) for i, r in enumerate(rows) if not manifest.image_path(r).is_file()]
        if absent:
            shown = "; ".join(f"line {ln}: {p}" for ln, p in absent[:10])
            more = f" and {len(absent) - 10} more" if len(absent) > 10 else ""
            raise _fail(path, None, "path", f"{len(absent)} image file(s) missing: {shown}{more}")
    return manifest


def write_manifest(path: str | Path, rows: list[dict[str, object]], extra_columns: tuple[str, ...] = ()) -> Path:
    """Write rows atomically (temp file, then rename), required columns first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS + extra_columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    return path
