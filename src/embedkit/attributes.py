"""Sensitive attributes as data: which manifest columns, how numbers are banded, which intersections.

A declaration is a comma-separated list (``--attributes``; ``attributes = [...]`` in a study):
``sex`` (a column as it is), ``age:60`` or ``age:40,60,80`` (a number banded at cut points: a value v
lies in the band [c_i, c_{i+1})), ``race`` (any manifest column), ``sex*age`` (the intersection of two
declared attributes, named ``sex_age``). ``age`` without cut points is banded at 60, the paper's
young < 60 <= old. The group order fixes the sign of a two-group F1 gap (first - second): sex M, F;
bands from low to high; any other column in sorted order. An empty value is missing: the row takes
no part in that attribute's groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from embedkit.errors import EmbedkitError

DEFAULT = "sex,age,sex*age"          # today's three: sex, the paper's age bands, and their intersection
ACTED_ON = "sex"                     # what an intervention or a fairness-aware selection acts on unless told
OLD_AGE = 60                         # the paper's one age cut: young < 60 <= old (the one age-band system)
AGE_BANDS = ("young", "old")
SEXES = ("M", "F")
DEFAULT_CUTS = {"age": (float(OLD_AGE),)}
KNOWN_ORDER = {"sex": SEXES}


@dataclass(frozen=True)
class Attribute:
    """One declared attribute: its name in the metrics, its columns, and its numeric cut points."""

    name: str
    columns: tuple[str, ...]                    # one column, or two for an intersection
    cuts: tuple[tuple[float, ...] | None, ...]  # per column: cut points, or None for categorical

    def labels(self, data: Mapping[str, np.ndarray]) -> np.ndarray:
        """Each row's group label ('' when any part is missing)."""
        parts = [_band(data, c, cuts) for c, cuts in zip(self.columns, self.cuts)]
        if len(parts) == 1:
            return parts[0]
        joined = np.char.add(np.char.add(parts[0].astype(str), "-"), parts[1].astype(str))
        return np.where((parts[0] == "") | (parts[1] == ""), "", joined)

    def order(self, labels: np.ndarray) -> tuple[str, ...]:
        """The groups present, in the declared order."""
        present = sorted(set(labels.tolist()) - {""})
        if len(self.columns) == 1:
            return _ordered(self.columns[0], self.cuts[0], present)
        first = _ordered(self.columns[0], self.cuts[0], sorted({p.split("-", 1)[0] for p in present}))
        second = _ordered(self.columns[1], self.cuts[1], sorted({p.split("-", 1)[1] for p in present}))
        return tuple(f"{a}-{b}" for a in first for b in second if f"{a}-{b}" in present)

    def sign(self, order: tuple[str, ...]) -> str:
        return f"{order[0]} - {order[1]}" if len(order) == 2 else "max - min over groups"


def parse(text: str | None) -> tuple[Attribute, ...]:
    """``'sex,age:40,60,race,sex*age'`` -> attributes (cut points follow their column after ':')."""
    tokens = _tokens(text or DEFAULT)
    cuts = dict(DEFAULT_CUTS)
    singles, crosses = [], []
    for token in tokens:
        if "*" in token:
            crosses.append(token)
            continue
        column, _, spec = token.partition(":")
        if spec:
            try:
                cuts[column] = tuple(sorted(float(v) for v in spec.split(",")))
            except ValueError:
                raise EmbedkitError(f"--attributes {token!r}: cut points must be numbers, e.g. age:40,60,80") from None
        singles.append(column)
    out = [Attribute(c, (c,), (cuts.get(c),)) for c in singles]
    for token in crosses:
        a, _, b = token.partition("*")
        if not a or not b or "*" in b:
            raise EmbedkitError(f"--attributes {token!r}: an intersection names two attributes, e.g. sex*age")
        out.append(Attribute(f"{a}_{b}", (a, b), (cuts.get(a), cuts.get(b))))
    names = [a.name for a in out]
    if len(set(names)) != len(names):
        raise EmbedkitError(f"--attributes {text!r}: an attribute is declared twice")
    return tuple(out)


def columns_needed(attributes: tuple[Attribute, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(c for a in attributes for c in a.columns))


def check_columns(attributes: tuple[Attribute, ...], available, where: str) -> None:
    """Name a declared attribute the data lacks, and what is there."""
    missing = [c for c in columns_needed(attributes) if c not in available]
    if missing:
        raise EmbedkitError(f"{where}: no column {', '.join(map(repr, missing))} for --attributes; "
                            f"columns there: {', '.join(sorted(available))}")


def _tokens(text: str) -> list[str]:
    """Split on commas, keeping 'age:40,60,80' together (a number after a comma continues the cuts)."""
    tokens: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        if tokens and ":" in tokens[-1] and "*" not in tokens[-1] and _is_number(piece):
            tokens[-1] += "," + piece
        else:
            tokens.append(piece)
    return tokens


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _band(data: Mapping[str, np.ndarray], column: str, cuts: tuple[float, ...] | None) -> np.ndarray:
    values = np.asarray(data[column]).astype(str)
    if cuts is None:
        return np.char.strip(values)
    missing = np.char.strip(values) == ""
    try:
        numbers = np.where(missing, "nan", values).astype(float)
    except ValueError:
        bad = next(v for v in values if v.strip() and not _is_number(v))
        raise EmbedkitError(f"column {column!r}: {bad!r} is not a number, so it cannot be banded at "
                            f"{', '.join(f'{c:g}' for c in cuts)}") from None
    names = band_names(column, cuts)
    out = np.array(names, dtype=object)[np.searchsorted(np.asarray(cuts), np.nan_to_num(numbers), side="right")]
    return np.where(missing, "", out.astype(str))


def band_names(column: str, cuts: tuple[float, ...]) -> tuple[str, ...]:
    """Band labels: the paper's young/old for age at one cut; otherwise '<40', '40-60', '>=80'."""
    if column == "age" and cuts == DEFAULT_CUTS["age"]:
        return AGE_BANDS
    inner = [f"{a:g}-{b:g}" for a, b in zip(cuts[:-1], cuts[1:])]
    return (f"<{cuts[0]:g}", *inner, f">={cuts[-1]:g}")


def _ordered(column: str, cuts, present: list[str]) -> tuple[str, ...]:
    if cuts is not None:
        return tuple(b for b in band_names(column, cuts) if b in present)
    known = KNOWN_ORDER.get(column, ())
    return tuple([g for g in known if g in present] + [g for g in present if g not in known])
