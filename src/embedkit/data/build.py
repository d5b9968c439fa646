"""What every dataset builder shares: findings to one label per image, the balanced selection, the
split, and the manifest written.

A builder (``nih``, ``chexpert``, ``mimic``, ``padchest``, ``csvfile``) reads its source's published
files into ``Source`` rows; ``build`` then maps findings to the declared classes (an explicit policy
for images with several findings and for uncertain labels), optionally selects the paper's balanced
subset generalised to any classes x attribute groups, splits by patient and writes the manifest.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from embedkit.attributes import Attribute, parse
from embedkit.data.registry import Summary, option
from embedkit.data.splits import patient_split
from embedkit.errors import EmbedkitError
from embedkit.spec import TASK
from embedkit.manifest import COLUMNS, SPLITS, STUDY_CLASSES, read_manifest, sex_age_groups, write_manifest

LABEL_POLICIES = {
    "single": "exactly one positive finding in the whole record, and it is a declared class (the paper's NIH rule)",
    "single-in-classes": "exactly one positive among the declared classes; findings outside them are allowed",
    "first": "multi-label images keep the first positive declared class, in the declared class order",
}
UNCERTAIN_POLICIES = {
    "ignore": "an image with an uncertain (-1) declared class is left out",
    "zeros": "uncertain counts as negative (U-Zeros)",
    "ones": "uncertain counts as positive (U-Ones)",
}


@dataclass(kw_only=True)
class Labelling:
    """The options every published-source builder shares: which findings, how labelled, selected, split."""

    classes: str = option(",".join(STUDY_CLASSES), help="Comma-separated classes (findings) to keep.")
    label_policy: str = option("single", help="; ".join(f"{k}: {v}" for k, v in LABEL_POLICIES.items()))
    uncertain: str = option("ignore", help="; ".join(f"{k}: {v}" for k, v in UNCERTAIN_POLICIES.items()))
    balanced: Optional[int] = option(None, help="Select N images per (class x group) cell, as the paper's NIH subset.",
                                     min=1)
    balance_on: str = option("sex,age", help="One or two attributes the balanced cells use (the first is filled "
                                             "from its other groups when short).")
    min_fraction: float = option(0.9, help="A balanced cell needs this fraction of N.", min=0.0, max=1.0)
    split: str = option("patient", help="patient (7:1:2, patient-disjoint, stratified) or official.")
    seed: int = option(0, help="Seed of the selection and the split.", min=0)
    task: str = option(TASK.kind, help="multiclass: one class per image (--classes, --label-policy); multilabel: "
                                       "every image, its findings in label separated by |, uncertain ones masked.")
    findings: str = option("", help="Multilabel: the findings to keep, comma-separated (default: every finding of "
                                    "the source).")

    def class_tuple(self) -> tuple[str, ...]:
        items = tuple(c.strip() for c in self.classes.split(",") if c.strip())
        if not items:
            raise EmbedkitError("--classes: give at least one class")
        return items


def images_option():
    """The --images option of builders whose paths are relative to a dataset folder."""
    return option(None, help="Images root; manifest paths are made absolute.", exists=True, file_okay=False)


def finish(sources: list["Source"], notes: list[str], where: str, opts: Labelling, out: Path) -> Summary:
    """Label, select, split and write ``sources`` as ``opts`` says; the summary of what was kept."""
    if opts.task != "multiclass":
        return _finish_findings(sources, notes, where, opts, out)
    classes = opts.class_tuple()
    built = build(sources, out, classes=classes, policy=opts.label_policy, uncertain=opts.uncertain,
                  balanced=opts.balanced, balance_on=opts.balance_on, min_fraction=opts.min_fraction, split=opts.split,
                  seed=opts.seed, where=where)
    summary = Summary(Path(out), notes=notes + [f"{v} image(s) left out: {k}" for k, v in built.dropped.items()])
    if built.balanced:
        summary.warnings += [f"dropped class {c}: {why}" for c, why in built.balanced["dropped"].items()]
    labels = [r["label"] for r in built.rows]
    rows = [[c, labels.count(c), *(sum(1 for r in built.rows if r["label"] == c and r["split"] == s) for s in SPLITS)]
            for c in classes]
    summary.tables.append((f"{out}: {len(built.rows)} images kept of {built.read} usable rows read",
                           ["class", "images", *SPLITS], rows))
    return summary


@dataclass
class Source:
    """One image as a builder read it: findings are name -> 1 (positive), 0, -1 (uncertain) or None."""

    image_id: str
    path: str
    patient_id: str
    sex: str
    age: int
    findings: dict[str, float | None]
    split: str = ""                       # the source's official split, when it has one
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class Built:
    """What a build decided, for the command's summary."""

    rows: list[dict]
    read: int
    dropped: Counter                      # reason -> count
    balanced: dict | None = None          # cell -> count, and classes dropped with why


def label_of(findings: dict, classes: tuple[str, ...], policy: str, uncertain: str) -> tuple[str | None, str]:
    """(class, '') or (None, why the image is left out)."""
    values = {k: (1.0 if v == -1 and uncertain == "ones" else 0.0 if v == -1 and uncertain == "zeros" else v)
              for k, v in findings.items()}
    if uncertain == "ignore" and any(values.get(c) == -1 for c in classes):
        return None, "uncertain label"
    positive = [k for k, v in values.items() if v == 1]
    in_classes = [c for c in classes if values.get(c) == 1]
    if not in_classes:
        return None, "no declared class"
    if policy == "single" and len(positive) != 1:
        return None, "several findings"
    if policy == "single-in-classes" and len(in_classes) != 1:
        return None, "several declared classes"
    return in_classes[0], ""


def check_policies(policy: str, uncertain: str) -> None:
    if policy not in LABEL_POLICIES:
        raise EmbedkitError(f"--label-policy {policy!r}: choose {', '.join(LABEL_POLICIES)}")
    if uncertain not in UNCERTAIN_POLICIES:
        raise EmbedkitError(f"--uncertain {uncertain!r}: choose {', '.join(UNCERTAIN_POLICIES)}")


def balance(rows: list[dict], classes: tuple[str, ...], fill: Attribute, within: Attribute | None, *, per_group: int,
            min_fraction: float = 0.9, seed: int = 0) -> tuple[list[dict], dict]:
    """The paper's balanced selection for any classes x groups: ``per_group`` images per (class, fill
    group, within group) cell; a fill group's shortfall is made up from the other fill groups of the same
    within group; a class lacking images (a within group under k x N, or a cell under min_fraction x N)
    is dropped with the reason. For NIH (fill = sex, within = age band) this is the paper's rule."""
    columns = _columns(rows)
    fill_labels = fill.labels(columns)
    within_labels = within.labels(columns) if within else np.full(len(rows), "all")
    fills = fill.order(fill_labels)
    withins = within.order(within_labels) if within else ("all",)
    pools: dict = {c: defaultdict(list) for c in classes}
    for r, f, w in zip(rows, fill_labels, within_labels):
        if r["label"] in pools and f and w:
            pools[r["label"]][(f, w)].append(r)
    rng = np.random.default_rng(seed)
    n, k = per_group, len(fills)
    chosen = []
    report = {"counts": {}, "dropped": {}, "pools": {c: Counter({fw: len(v) for fw, v in p.items()}) for c, p in pools.items()}}
    for c in classes:
        pool = pools[c]
        short = [f"{w} has {sum(len(pool[(f, w)]) for f in fills)} < {k * n} images" for w in withins
                 if sum(len(pool[(f, w)]) for f in fills) < k * n]
        short += [f"{f}-{w} has {len(pool[(f, w)])} < {min_fraction:g}×{n} images" for f in fills for w in withins
                  if len(pool[(f, w)]) < min_fraction * n]
        if short:
            report["dropped"][c] = "; ".join(short)
            continue
        report["counts"][c] = Counter()
        for w in withins:
            shuffled = {f: [pool[(f, w)][i] for i in rng.permutation(len(pool[(f, w)]))] for f in fills}
            take = {f: min(n, len(shuffled[f])) for f in fills}
            for f in fills:  # a shortfall is filled from the other groups of the same band, in order
                missing = max(0, n - len(shuffled[f]))
                for other in (g for g in fills if g != f):
                    extra = min(missing, len(shuffled[other]) - take[other])
                    take[other] += extra
                    missing -= extra
            for f in fills:
                picked = shuffled[f][: take[f]]
                report["counts"][c][(f, w)] += len(picked)
                chosen += picked
    return chosen, report


def _columns(rows: list[dict]) -> dict[str, np.ndarray]:
    keys = rows[0].keys() if rows else ()
    return {k: np.array([str(r[k]) for r in rows]) for k in keys}


def build(sources: list[Source], out: str | Path, *, classes: tuple[str, ...], policy: str = "single",
          uncertain: str = "ignore", balanced: int | None = None, balance_on: str = "sex,age",
          min_fraction: float = 0.9, split: str = "patient", seed: int = 0, where: str = "") -> Built:
    """Label, (optionally) balance, split and write; returns what was kept and dropped."""
    check_policies(policy, uncertain)
    dropped: Counter = Counter()
    rows = []
    for s in sources:
        label, why = label_of(s.findings, classes, policy, uncertain)
        if label is None:
            dropped[why] += 1
            continue
        rows.append({"image_id": s.image_id, "path": s.path, "patient_id": s.patient_id, "label": label, "sex": s.sex,
                     "age": s.age, "split": s.split, **{k: v for k, v in s.extra.items() if k not in COLUMNS}})
    if not rows:
        raise EmbedkitError(f"{where}: no image has a usable label for classes {', '.join(classes)} "
                            f"(left out: {', '.join(f'{k} {v}' for k, v in dropped.items()) or 'none read'})")
    report = None
    if balanced:
        attrs = parse(balance_on)
        if len(attrs) > 2:
            raise EmbedkitError(f"--balance-on {balance_on!r}: give one or two attributes (e.g. sex,age)")
        rows, report = balance(rows, classes, attrs[0], attrs[1] if len(attrs) > 1 else None, per_group=balanced,
                               min_fraction=min_fraction, seed=seed)
        if not rows:
            raise EmbedkitError(f"{where}: no class has {balanced} images in every cell: "
                                + "; ".join(f"{c}: {w}" for c, w in report["dropped"].items()))
    _split(rows, split, parse(balance_on), seed, where)
    extra = tuple(dict.fromkeys(k for r in rows for k in r if k not in COLUMNS))
    write_manifest(out, rows, extra_columns=extra)
    return Built(rows, len(sources), dropped, report)


def _split(rows: list[dict], how: str, strata: tuple[Attribute, ...], seed: int, where: str, label_of_row=None) -> None:
    """The source's official split (its 'validate' read as val), or a patient-disjoint 7:1:2 split
    stratified by class x the balancing attributes' groups (``patient``; sex x age band by default)."""
    if how == "official":
        missing = sum(1 for r in rows if r["split"] not in SPLITS)
        if missing:
            raise EmbedkitError(f"{where}: {missing} image(s) have no official train/val/test split; use --split patient")
        return
    if how != "patient":
        raise EmbedkitError(f"--split {how!r}: choose patient or official")
    split_rows(rows, strata, seed, label_of_row)


def split_rows(rows: list[dict], strata: tuple[Attribute, ...], seed: int, label_of_row=None) -> None:
    """Set every row's split: patient-disjoint 7:1:2, stratified by class (or ``label_of_row(row)``) x the
    groups of ``strata``."""
    columns = _columns(rows)
    groups = [a.labels(columns) for a in strata]
    label = label_of_row or (lambda r: r["label"])
    cells = [(label(r), *(g[i] for g in groups)) for i, r in enumerate(rows)]
    for r, s in zip(rows, patient_split([r["patient_id"] for r in rows], cells, seed=seed)):
        r["split"] = s


def _finish_findings(sources: list["Source"], notes: list[str], where: str, opts: Labelling, out: Path) -> Summary:
    """A multi-label manifest: every image, ``label`` its positive findings joined by | (``No Finding`` for
    none), ``masked`` the findings uncertain under ``--uncertain ignore``; blank (unmentioned) counts negative."""
    from embedkit.tasks import KINDS, MASKED_COLUMN, NO_FINDING, SEPARATOR

    if opts.task not in KINDS:
        raise EmbedkitError(f"--task {opts.task!r}: choose {', '.join(KINDS)}")
    if opts.balanced:
        raise EmbedkitError("--balanced selects one class per image: use it with --task multiclass")
    check_policies(opts.label_policy, opts.uncertain)
    every = sorted({f for s in sources for f in s.findings} - {NO_FINDING})
    findings = [f.strip() for f in opts.findings.split(",") if f.strip()] or every
    unknown = [f for f in findings if f not in every]
    if unknown:
        raise EmbedkitError(f"--findings: {', '.join(unknown)} not among the source's findings ({', '.join(every)})")
    rows = []
    for s in sources:
        value = {f: s.findings.get(f) for f in findings}
        if opts.uncertain != "ignore":
            value = {f: (1.0 if opts.uncertain == "ones" else 0.0) if v == -1 else v for f, v in value.items()}
        positive = [f for f in findings if value[f] == 1]
        rows.append({"image_id": s.image_id, "path": s.path, "patient_id": s.patient_id, "sex": s.sex, "age": s.age,
                     "split": s.split, "label": SEPARATOR.join(positive) or NO_FINDING,
                     MASKED_COLUMN: SEPARATOR.join(f for f in findings if value[f] == -1),
                     **{k: v for k, v in s.extra.items() if k not in COLUMNS}})
    if not rows:
        raise EmbedkitError(f"{where}: no image read")
    strata = lambda r: r["label"] != NO_FINDING  # noqa: E731   (split stratified by having a finding)
    _split(rows, opts.split, parse(opts.balance_on), opts.seed, where, label_of_row=strata)
    extra = tuple(dict.fromkeys(k for r in rows for k in r if k not in COLUMNS))
    write_manifest(out, rows, extra_columns=extra)
    counts = [[f, *(sum(f in r["label"].split(SEPARATOR) for r in rows if r["split"] == sp) for sp in SPLITS)]
              for f in findings]
    table = (f"{out}: {len(rows)} images (multi-label, {len(findings)} findings) of {len(sources)} usable rows read",
             ["finding", *(f"positive in {sp}" for sp in SPLITS)], counts)
    masked = sum(bool(r[MASKED_COLUMN]) for r in rows)
    return Summary(Path(out), notes=notes + ([f"{masked} image(s) have masked (uncertain) findings"] if masked else []),
                   tables=[table])


def split_table(manifest: Path) -> tuple[str, list[str], list[list]]:
    """Images per class by sex x age band and by split, the summary every balanced build prints."""
    m = read_manifest(manifest)
    labels, splits, groups = m.column("label"), m.column("split"), m.column("sex_age")
    rows = [[c, *(int(((labels == c) & (groups == g)).sum()) for g in sex_age_groups()),
             *(int(((labels == c) & (splits == s)).sum()) for s in SPLITS)] for c in m.classes]
    return (f"{manifest}: {len(m)} images, {len(set(m.column('patient_id')))} patients",
            ["class", *sex_age_groups(), *SPLITS], rows)
