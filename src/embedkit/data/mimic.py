"""MIMIC-CXR-JPG (Johnson et al. 2019) with MIMIC-IV demographics.

Files (each as published, .csv or .csv.gz): ``mimic-cxr-2.0.0-metadata.csv`` (dicom_id, subject_id,
study_id, ViewPosition, StudyDate), ``mimic-cxr-2.0.0-chexpert.csv`` (subject_id, study_id and the
CheXpert labeler's 14 columns, per study), ``mimic-cxr-2.0.0-split.csv`` (dicom_id, split: train,
validate, test), MIMIC-IV ``patients.csv`` (subject_id, gender, anchor_age, anchor_year) and, when
given, ``admissions.csv`` (subject_id, race — ``ethnicity`` before MIMIC-IV 2.0 — and insurance).

Age at the study is anchor_age + (study year - anchor_year) (both dates are shifted alike). A
subject's race and insurance are the most frequent values over their admissions (ties: the first admitted,
by admittime where the file has it, else the file's order); ``race_group`` is the most frequent of the groups
Seyyed-Kalantari et al. compared (White, Black, Hispanic, Asian, American Indian, Other). Frontal views
(PA, AP) by default; images lie in ``<images>/files/p<first two digits>/p<subject_id>/s<study_id>/<dicom_id>.jpg``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from embedkit.data.build import Labelling, Source, finish, images_option
from embedkit.data.registry import Builder, option, register
from embedkit.data.chexpert import findings
from embedkit.data.tables import read_table
from embedkit.errors import EmbedkitError

SEX = {"M": "M", "F": "F"}
RACE_PREFIXES = (("WHITE", "White"), ("PORTUGUESE", "White"), ("BLACK", "Black"), ("HISPANIC", "Hispanic"),
                 ("SOUTH AMERICAN", "Hispanic"), ("ASIAN", "Asian"), ("AMERICAN INDIAN", "American Indian"))
FRONTAL = ("PA", "AP")
NO_ADMISSIONS = {"race": "", "race_group": "", "insurance": ""}


def read(metadata: str | Path, labels: str | Path, patients: str | Path, *, split: str | Path | None = None,
         admissions: str | Path | None = None, views: tuple[str, ...] = FRONTAL,
         images: str | Path | None = None) -> tuple[list[Source], list[str]]:
    """Every frontal image with a labelled study and a known patient, as a Source."""
    study_labels = {(r["subject_id"], r["study_id"]): findings(r, f"{labels}, line {line}")
                    for line, r in read_table(labels, ("subject_id", "study_id"), "mimic-cxr-2.0.0-chexpert.csv")}
    people = {r["subject_id"]: r for _, r in read_table(patients, ("subject_id", "gender", "anchor_age", "anchor_year"),
                                                        "MIMIC-IV's patients.csv")}
    official = ({r["dicom_id"]: {"validate": "val"}.get(r["split"], r["split"])
                 for _, r in read_table(split, ("dicom_id", "split"), "mimic-cxr-2.0.0-split.csv")} if split else {})
    social = _admissions(admissions) if admissions else {}
    rows, skipped = [], Counter()
    for line, r in read_table(metadata, ("dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate"),
                              "mimic-cxr-2.0.0-metadata.csv"):
        if r["ViewPosition"] not in views:
            skipped["view"] += 1
            continue
        found = study_labels.get((r["subject_id"], r["study_id"]))
        person = people.get(r["subject_id"])
        if found is None or person is None:
            skipped["no labels" if found is None else "no patient record"] += 1
            continue
        if person["gender"] not in SEX:
            skipped["sex"] += 1
            continue
        try:
            age = int(person["anchor_age"]) + int(r["StudyDate"][:4]) - int(person["anchor_year"])
        except ValueError:
            raise EmbedkitError(f"{metadata}, line {line}: StudyDate {r['StudyDate']!r} or patient "
                                f"{r['subject_id']}'s anchor_age/anchor_year is not a number") from None
        s = r["subject_id"]
        rel = f"files/p{s[:2]}/p{s}/s{r['study_id']}/{r['dicom_id']}.jpg"
        rows.append(Source(image_id=r["dicom_id"], path=str(Path(images) / rel) if images else rel, patient_id=s,
                           sex=SEX[person["gender"]], age=age, findings=found, split=official.get(r["dicom_id"], ""),
                           extra={"view": r["ViewPosition"], **social.get(s, NO_ADMISSIONS)}))
    return rows, [f"{n} image(s) left out: {why}" for why, n in skipped.items()]


def _admissions(path: str | Path) -> dict[str, dict[str, str]]:
    table = read_table(path, ("subject_id", "insurance"), "MIMIC-IV's admissions.csv")
    if table and "race" not in table[0][1] and "ethnicity" not in table[0][1]:
        raise EmbedkitError(f"{path}: no race (or ethnicity) column; give MIMIC-IV's admissions.csv")
    if table and "admittime" in table[0][1]:
        table = sorted(table, key=lambda row: row[1]["admittime"])     # ISO times: ties go to the first admitted
    values: dict[str, dict[str, Counter]] = {}
    for _, r in table:
        v = values.setdefault(r["subject_id"], {"race": Counter(), "insurance": Counter()})
        raw = r.get("race", r.get("ethnicity", ""))
        if race_group(raw):
            v["race"][raw] += 1
        if r["insurance"]:
            v["insurance"][r["insurance"]] += 1
    return {s: {**_race(v["race"]), "insurance": _most_common(v["insurance"])} for s, v in values.items()}


def _most_common(counts: Counter) -> str:
    return counts.most_common(1)[0][0] if counts else ""       # ties: the first counted


def _race(raw: Counter) -> dict[str, str]:
    """The most frequent published race over a subject's admissions, and the most frequent race group (counted
    over the groups: two admissions "ASIAN - CHINESE" and "ASIAN - KOREAN" outweigh one "WHITE")."""
    groups = Counter()
    for value, n in raw.items():
        groups[race_group(value)] += n
    return {"race": _most_common(raw), "race_group": _most_common(groups)}


def race_group(race: str) -> str:
    """MIMIC-IV's race ("WHITE - OTHER EUROPEAN", "ASIAN - CHINESE", ...; v1's coarser ethnicity alike) as the
    groups of Seyyed-Kalantari et al.: White, Black, Hispanic, Asian, American Indian or Other; unknown is ''."""
    text = race.strip().upper()
    if text in ("", "UNKNOWN", "UNABLE TO OBTAIN", "PATIENT DECLINED TO ANSWER"):
        return ""
    return next((group for prefix, group in RACE_PREFIXES if text.startswith(prefix)), "Other")


@dataclass(kw_only=True)
class Options(Labelling):
    metadata: Path = option(help="mimic-cxr-2.0.0-metadata.csv[.gz].", exists=True, dir_okay=False)
    labels: Path = option(help="mimic-cxr-2.0.0-chexpert.csv[.gz].", exists=True, dir_okay=False)
    patients: Path = option(help="MIMIC-IV patients.csv[.gz] (sex, anchor age).", exists=True, dir_okay=False)
    admissions: Optional[Path] = option(None, help="MIMIC-IV admissions.csv[.gz]: adds race and insurance.",
                                        exists=True, dir_okay=False)
    official_split: Optional[Path] = option(None, help="mimic-cxr-2.0.0-split.csv[.gz] (use with --split official).",
                                            exists=True, dir_okay=False)
    views: str = option(",".join(FRONTAL), help="ViewPosition values to keep (comma-separated).")
    images: Optional[Path] = images_option()


def _run(opts: Options, out: Path):
    rows, notes = read(opts.metadata, opts.labels, opts.patients, split=opts.official_split, admissions=opts.admissions,
                       views=tuple(opts.views.split(",")), images=opts.images)
    return finish(rows, notes, str(opts.metadata), opts, out)


register(Builder("mimic-cxr", "MIMIC-CXR-JPG with MIMIC-IV sex, age, race and insurance; frontal views.", Options, _run))
