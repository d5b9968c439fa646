"""CheXpert (Irvin et al. 2019) from ``train.csv`` / ``valid.csv`` and, when given, the CheXpert
demographics file ``CHEXPERT DEMO.xlsx`` (or a CSV of it: PATIENT, GENDER, AGE_AT_CXR, PRIMARY_RACE,
ETHNICITY) for race and ethnicity as published, and grouped: ``race_group`` Asian, Black, White or Other,
``ethnicity_group`` Hispanic or Non-Hispanic (unknown or refused left empty, so missing).

Labels are the CheXpert labeler's: 1.0 positive, 0.0 negative, -1.0 uncertain, blank unmentioned
(an explicit ``--uncertain`` policy decides the -1s). Sex from ``Sex`` (Male/Female; Unknown left
out), age from ``Age``; frontal views by default (``Frontal/Lateral``). The patient is the
``patientNNNNN`` part of ``Path``; ``--images`` is the folder that holds ``CheXpert-v1.0[-small]/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from embedkit.data.build import Labelling, Source, finish, images_option
from embedkit.data.registry import Builder, option, register
from embedkit.data.tables import read_table
from embedkit.errors import EmbedkitError

FINDINGS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
            "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
            "Support Devices")
NOT_FINDINGS = ("Support Devices",)          # a device is no finding: it does not make an image multi-label
COLUMN_OF = {"Effusion": "Pleural Effusion"}  # the study's class names -> the labeler's columns
SEX = {"Male": "M", "Female": "F"}
_PATIENT = re.compile(r"(patient\d+)")
UNKNOWN = ("unknown", "refused", "declined")     # PRIMARY_RACE / ETHNICITY values that say nothing


def findings(row: dict[str, str], where: str) -> dict[str, float | None]:
    """The labeler's columns as class -> 1, 0, -1 or None (unmentioned), under the study's class names."""
    out: dict[str, float | None] = {}
    for col in FINDINGS:
        if col in NOT_FINDINGS:
            continue
        text = row.get(col, "").strip()
        try:
            value = float(text) if text else None
        except ValueError:
            raise EmbedkitError(f"{where}, column '{col}': {text!r} is not 1.0, 0.0, -1.0 or blank") from None
        if value not in (None, 1.0, 0.0, -1.0):
            raise EmbedkitError(f"{where}, column '{col}': {text!r} is not 1.0, 0.0, -1.0 or blank")
        out[col] = value
    for name, col in COLUMN_OF.items():
        out[name] = out.pop(col)
    return out


def read(labels: list[str | Path], *, demographics: str | Path | None = None, views: tuple[str, ...] = ("Frontal",),
         images: str | Path | None = None) -> tuple[list[Source], list[str]]:
    """Rows of train.csv / valid.csv (train -> split train, valid -> val) with demographics joined."""
    demo = _demographics(demographics) if demographics else {}
    rows, skipped = [], {"view": 0, "sex": 0, "age": 0, "no demographics": 0}
    for path in labels:
        split = "val" if "valid" in Path(path).name else "train"
        for line, r in read_table(path, ("Path", "Sex", "Age", "Frontal/Lateral", *FINDINGS), "CheXpert's train.csv or valid.csv"):
            where = f"{path}, line {line}"
            if r["Frontal/Lateral"] not in views:
                skipped["view"] += 1
                continue
            if r["Sex"] not in SEX:
                skipped["sex"] += 1
                continue
            m = _PATIENT.search(r["Path"])
            if not m:
                raise EmbedkitError(f"{where}, column 'Path': {r['Path']!r} has no patientNNNNN part")
            try:
                age = int(float(r["Age"]))
            except ValueError:
                skipped["age"] += 1
                continue
            extra = {"view": r.get("AP/PA", "")}
            if demo:
                if m.group(1) not in demo:
                    skipped["no demographics"] += 1
                    continue
                extra |= demo[m.group(1)]
            image_id = "_".join(Path(r["Path"]).with_suffix("").parts[-3:])
            rows.append(Source(image_id=image_id, path=str(Path(images) / r["Path"]) if images else r["Path"],
                               patient_id=m.group(1), sex=SEX[r["Sex"]], age=age, findings=findings(r, where),
                               split=split, extra=extra))
    return rows, [f"{n} image(s) left out: {why}" for why, n in skipped.items() if n]


def race_group(primary_race: str) -> str:
    """PRIMARY_RACE's many spellings ("White, non-Hispanic", "Asian - Historical Conv", ...) as Asian, Black, White
    or Other, the groups of Gichoya et al. and Glocker et al. (their order of precedence: Asian, White, Black);
    unknown or refused is missing ('')."""
    text = primary_race.strip()
    if not text or any(word in text.lower() for word in UNKNOWN):
        return ""
    return next((group for group in ("Asian", "White", "Black") if group in text), "Other")


def ethnicity_group(ethnicity: str) -> str:
    """ETHNICITY's spellings as Hispanic or Non-Hispanic; unknown or refused is missing ('')."""
    text = ethnicity.strip().lower()
    if not text or any(word in text for word in UNKNOWN):
        return ""
    return "Non-Hispanic" if text.startswith(("non", "not")) else "Hispanic" if "hispanic" in text else ""


def _demographics(path: str | Path) -> dict[str, dict[str, str]]:
    table = read_table(path, ("PATIENT", "PRIMARY_RACE", "ETHNICITY"),
                       "the CheXpert demographics file (CHEXPERT DEMO.xlsx, or a CSV with its columns)")
    return {r["PATIENT"]: {"race": r["PRIMARY_RACE"], "ethnicity": r["ETHNICITY"],
                           "race_group": race_group(r["PRIMARY_RACE"]), "ethnicity_group": ethnicity_group(r["ETHNICITY"])}
            for _, r in table}


@dataclass(kw_only=True)
class Options(Labelling):
    labels: list[Path] = option(help="train.csv and/or valid.csv (repeatable).", exists=True, dir_okay=False)
    demographics: Optional[Path] = option(None, help="CHEXPERT DEMO.xlsx (or its CSV): adds race and ethnicity.",
                                          exists=True, dir_okay=False)
    views: str = option("Frontal", help="Frontal/Lateral values to keep (comma-separated).")
    images: Optional[Path] = images_option()


def _run(opts: Options, out: Path):
    rows, notes = read(opts.labels, demographics=opts.demographics, views=tuple(opts.views.split(",")), images=opts.images)
    return finish(rows, notes, str(opts.labels[0]), opts, out)


register(Builder("chexpert", "CheXpert: the labeler's 14 observations, an explicit policy for uncertain labels, "
                             "frontal views.", Options, _run))
