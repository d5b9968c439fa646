"""The predictions file, ``predictions.csv``: one row per evaluated image, the same for every method.

Columns: image_id, patient_id, split, the attribute columns (sex, age and every other manifest column a fairness
attribute can be declared on), then for classes ``label``, ``pred`` and ``prob_<class>``, or for findings
``true_<finding>`` (1, 0, or empty when masked) and ``prob_<finding>``. The report and ``embedkit evaluate`` read
only these files. ``patient_id`` makes the patient the unit of every bootstrap and permutation (files without it
are evaluated image by image).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedkit.errors import EmbedkitError

PREDICTIONS = "predictions.csv"
REQUIRED = ("image_id", "split", "label")    # ``pred`` is written for people to read; the metrics use the probabilities
NOT_ATTRIBUTES = ("image_id", "path", "patient_id", "label", "split", "pred", "masked")
COLUMNS_FROM = 1 << 20      # bytes from which pyarrow reads the file: below, the rows are read before pyarrow loads (0.2 s)
TRUTHS = ("", "0", "1", "0.0", "1.0")          # a true_<finding> cell: positive, negative or masked


@dataclass
class Predictions:
    """One run's predictions; ``proba`` rows and every attribute column align with the other arrays."""

    image_id: np.ndarray
    split: np.ndarray
    label: np.ndarray      # class names
    proba: np.ndarray
    classes: tuple[str, ...]
    attributes: dict[str, np.ndarray] = field(default_factory=dict)   # column -> values as text (sex, age, race, ...)
    patient_id: np.ndarray | None = None      # the unit of resampling; None: every image its own
    truth: np.ndarray | None = None           # binary / multi-label tasks: (N, F) targets, NaN masked; classes = findings
    source: Path | str | None = None          # the file it was read from (or 'the DataFrame'), named in errors

    def select(self, split: str) -> "Predictions":
        keep = self.split == split
        if not keep.any():
            raise EmbedkitError(f"{self.source or 'predictions'}: no rows with split '{split}'; "
                                f"it has {', '.join(sorted(set(self.split.tolist())))}")
        pick = lambda v: None if v is None else v[keep]  # noqa: E731
        return Predictions(self.image_id[keep], self.split[keep], pick(self.label), self.proba[keep], self.classes,
                           {k: v[keep] for k, v in self.attributes.items()}, pick(self.patient_id), pick(self.truth),
                           self.source)

    def y_true(self) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[c] for c in self.label], dtype=np.int64)


def attribute_columns(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The columns of a manifest (or a store joined to one) a fairness attribute can be declared on."""
    return {k: np.asarray(v).astype(str) for k, v in columns.items()
            if k not in NOT_ATTRIBUTES and not k.startswith(("prob_", "true_"))}


def concat(parts: list[Predictions]) -> Predictions:
    """Several runs' rows as one set (e.g. the out-of-fold test predictions of K rounds); errors about it name the
    first run's file."""
    classes = parts[0].classes
    if any(p.classes != classes for p in parts):
        raise EmbedkitError("cannot pool predictions over different class lists")
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    shared = [k for k in parts[0].attributes if all(k in p.attributes for p in parts)]
    patients = None if any(p.patient_id is None for p in parts) else cat("patient_id")
    findings = parts[0].truth is not None
    return Predictions(cat("image_id"), cat("split"), None if findings else cat("label"), cat("proba"), classes,
                       {k: np.concatenate([p.attributes[k] for p in parts]) for k in shared}, patients,
                       cat("truth") if findings else None, parts[0].source)


def write_predictions(path: Path, p: Predictions) -> None:
    """Write predictions atomically (a partial file is never left under the final name). Each column is made
    text whole and the rows are written by csv's own writer: 2.8 s for 112,816 rows of 14 findings, where
    formatting a row at a time took 8.1 s (the same bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    ids = {"image_id": p.image_id, **({} if p.patient_id is None else {"patient_id": p.patient_id}), "split": p.split}
    probs = {f"prob_{c}": _decimals(p.proba[:, j]) for j, c in enumerate(p.classes)}
    if p.truth is not None:                  # findings: per finding F a true_F (1, 0, or empty when masked)
        truths = {f"true_{f}": _truth_text(p.truth[:, j]) for j, f in enumerate(p.classes)}
        columns = ids | p.attributes | truths | probs
    else:
        columns = ids | {"label": p.label} | p.attributes | {"pred": np.asarray(p.classes)[p.proba.argmax(1)]} | probs
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(list(columns))
        w.writerows(zip(*(v if isinstance(v, list) else np.asarray(v).tolist() for v in columns.values())))
    os.replace(tmp, path)


def _decimals(values: np.ndarray) -> list[str]:
    return [f"{v:.7g}" for v in values.tolist()]


def _truth_text(values: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(values), "", np.nan_to_num(values).astype(np.int64).astype(str))


def read_predictions(source) -> Predictions:
    """Read a predictions file (or a run folder's), or take a pandas DataFrame with its columns; errors name the
    file (or the DataFrame), and the line (or row) and column where one is wrong."""
    if hasattr(source, "columns") and hasattr(source, "iloc"):
        return _from_frame(source)
    path = Path(source)
    if path.is_dir() and not (path / PREDICTIONS).is_file():
        raise EmbedkitError(f"{path}: not a run folder (no {PREDICTIONS}); give a run's folder, "
                            f"<runs>/<dataset>/<model>/<method>/seed-<k>, or a predictions file")
    path = path / PREDICTIONS if path.is_dir() else path
    if not path.is_file():
        raise EmbedkitError(f"{path}: predictions file not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise EmbedkitError(f"{path}: not a predictions CSV ({type(exc).__name__}); give a run's predictions.csv") from None
    _check_header(path, header)
    table = (path.stat().st_size >= COLUMNS_FROM and _read_columns(path, header)) or _read_rows(path, header)
    return _assemble(path, header, table)


def _check_header(source, header: list[str]) -> None:
    """The columns a predictions table needs: classes' or findings' (named by their ``true_`` columns)."""
    findings = tuple(c[5:] for c in header if c.startswith("true_"))
    needed = ("image_id", "split", *(f"prob_{f}" for f in findings)) if findings else REQUIRED
    missing = [c for c in needed if c not in header]
    if missing or not any(c.startswith("prob_") for c in header):
        kind = "a findings predictions file" if findings else "a predictions file"
        raise EmbedkitError(f"{source}: not {kind} (missing {', '.join(missing) or 'prob_<class> columns'}); it needs "
                            + ("image_id, split, and true_<finding> and prob_<finding> per finding" if findings else
                               "image_id, split, label and prob_<class> per class")
                            + " (optional: patient_id, to resample patients, and attribute columns such as sex, age)")


def _assemble(source, header: list[str], table: dict[str, np.ndarray]) -> Predictions:
    """Predictions from checked columns (``prob_`` numbers, ``true_`` 1 / 0 / NaN, the rest text)."""
    findings = tuple(c[5:] for c in header if c.startswith("true_"))
    if findings:
        truth = np.stack([table[f"true_{f}"] for f in findings], 1)
        return Predictions(table["image_id"], table["split"], None, np.stack([table[f"prob_{f}"] for f in findings], 1),
                           findings, attribute_columns(table), table.get("patient_id"), truth, source)
    prob_cols = [c for c in header if c.startswith("prob_")]
    classes = tuple(c[5:] for c in prob_cols)
    unknown = sorted(set(table["label"]) - set(classes))
    if unknown:
        raise EmbedkitError(f"{source}: label(s) {', '.join(unknown)} have no prob_ column")
    return Predictions(table["image_id"], table["split"], table["label"], np.stack([table[c] for c in prob_cols], 1),
                       classes, attribute_columns(table), table.get("patient_id"), source=source)


def _from_frame(frame) -> Predictions:
    """A DataFrame's columns, checked as a file's lines are: every cell as its text, a missing value empty (a
    masked ``true_`` cell), so a frame and the CSV it would write give the same predictions."""
    name = "the DataFrame"
    header = [str(c) for c in frame.columns]
    _check_header(name, header)
    if len(set(header)) < len(header):
        raise EmbedkitError(f"{name}: column names repeat ({', '.join(sorted({c for c in header if header.count(c) > 1}))})")
    if not len(frame):
        raise EmbedkitError(f"{name}: has columns but no rows")
    table = {c: np.array(["" if missing else str(int(v)) if isinstance(v, (bool, np.bool_)) else str(v)
                          for v, missing in zip(frame.iloc[:, i].tolist(), frame.iloc[:, i].isna().tolist())])
             for i, c in enumerate(header)}
    index = frame.index.tolist()
    return _assemble(name, header, _parsed(table, header, lambda i: f"{name}, row {index[i]!r}"))


def _read_columns(path: Path, header: list[str]) -> dict[str, np.ndarray] | None:
    """Every column (``prob_`` and ``true_`` as float64, NaN a masked truth; the rest as text), read by pyarrow —
    or None at the first sign of trouble, for the row reader to name it. 0.65 s for 112,816 rows of 14 findings
    (24 MB) where the row reader takes 4.0 s. Only stricter than the row reader: what pyarrow will not parse goes
    there."""
    import pyarrow as pa

    from embedkit.manifest import arrow_table

    read = arrow_table(path, header, {c: pa.float64() for c in header if c.startswith("prob_")})
    if read is None:
        return None
    table = {c: read[c].to_numpy() if c.startswith("prob_") else
             read[c].to_numpy(zero_copy_only=False).astype(str) for c in header}
    for c in (c for c in header if c.startswith("true_")):
        if not np.isin(table[c], TRUTHS).all():
            return None
        table[c] = _truth_values(table[c])
    return table


def _read_rows(path: Path, header: list[str]) -> dict[str, np.ndarray]:
    """Every column as ``_read_columns`` gives it, line by line, naming the first line and column that is wrong."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))[1:]
    if not rows:
        raise EmbedkitError(f"{path}: has a header but no rows")
    for line, r in enumerate(rows, start=2):
        if len(r) != len(header):
            raise EmbedkitError(f"{path}, line {line}: {len(header)} fields expected")
    table = {c: np.array([r[i] for r in rows]) for i, c in enumerate(header)}
    return _parsed(table, header, lambda i: f"{path}, line {i + 2}")


def _parsed(table: dict[str, np.ndarray], header: list[str], at) -> dict[str, np.ndarray]:
    """Text columns with ``prob_`` as numbers and ``true_`` as 1 / 0 / NaN; ``at(i)`` names row i in an error."""
    for c in header:
        if c.startswith("prob_"):
            table[c] = _numbers(at, c, table[c])
        elif c.startswith("true_"):
            text = np.char.strip(table[c].astype(str))
            bad = np.flatnonzero(~np.isin(text, TRUTHS))
            if len(bad):
                raise EmbedkitError(f"{at(bad[0])}, column '{c}': {str(table[c][bad[0]])!r} is not 1, 0 or empty (masked)")
            table[c] = _truth_values(text)
    return table


def _truth_values(values: np.ndarray) -> np.ndarray:
    """1.0, 0.0, or NaN (masked: empty) from checked ``TRUTHS`` text."""
    return np.where(values == "", np.nan, np.isin(values, ("1", "1.0")).astype(float))


def _numbers(at, column: str, values: np.ndarray) -> np.ndarray:
    out = np.empty(len(values))
    for i, v in enumerate(values):
        try:
            out[i] = float(v)
        except ValueError:
            raise EmbedkitError(f"{at(i)}, column '{column}': {str(v)!r} is not a number") from None
    return out
