"""Any CSV: its columns mapped to the manifest's (``--columns path=File,label=Finding,sex=Gender``).

Mapped: ``image_id`` (default: the path), ``path`` (required), ``patient_id`` (default: the image
id), ``sex``, ``age``, ``label`` (one finding, or several separated by ``|`` as in NIH's Finding
Labels) and ``split`` (optional; otherwise a patient split). Sex spellings M/F, Male/Female (any
case) are read; every other column is kept, so any of them can be a sensitive attribute.
"""

from __future__ import annotations

from pathlib import Path

from embedkit.data.build import Source
from embedkit.data.tables import read_table
from embedkit.errors import EmbedkitError
from embedkit.manifest import SPLITS

SEX = {"m": "M", "male": "M", "f": "F", "female": "F"}
TARGETS = ("image_id", "path", "patient_id", "sex", "age", "label", "split")


def parse_columns(text: str) -> dict[str, str]:
    """'path=File,label=Finding' -> {'path': 'File', 'label': 'Finding'}; unmapped targets keep their name."""
    mapping = {t: t for t in TARGETS}
    for item in (p.strip() for p in text.split(",") if p.strip()):
        target, sep, source = item.partition("=")
        if not sep or target.strip() not in TARGETS:
            raise EmbedkitError(f"--columns {item!r}: write TARGET=COLUMN with TARGET one of {', '.join(TARGETS)}")
        mapping[target.strip()] = source.strip()
    return mapping


def read(path: str | Path, columns: dict[str, str], *, images: str | Path | None = None) -> tuple[list[Source], list[str]]:
    required = tuple(columns[t] for t in ("path", "sex", "age", "label"))
    table = read_table(path, required, f"a CSV with columns {', '.join(required)} (map others with --columns)")
    header = set(table[0][1]) if table else set()
    used = {columns[t] for t in TARGETS if columns[t] in header}
    rows, skipped = [], {"sex": 0, "age": 0}
    for line, r in table:
        where = f"{path}, line {line}"
        sex = SEX.get(r[columns["sex"]].lower())
        if sex is None:
            skipped["sex"] += 1
            continue
        try:
            age = int(float(r[columns["age"]]))
        except ValueError:
            skipped["age"] += 1
            continue
        split = r.get(columns["split"], "")
        if split and split not in SPLITS:
            raise EmbedkitError(f"{where}, column '{columns['split']}': {split!r} is not train, val or test")
        found = {f.strip(): 1.0 for f in r[columns["label"]].split("|") if f.strip()}
        image_id = r.get(columns["image_id"]) or r[columns["path"]]
        file = r[columns["path"]]
        rows.append(Source(image_id=image_id, path=str(Path(images) / file) if images else file,
                           patient_id=r.get(columns["patient_id"]) or image_id, sex=sex, age=age, findings=found,
                           split=split, extra={k: v for k, v in r.items() if k not in used}))
    return rows, [f"{n} row(s) left out: unreadable {why}" for why, n in skipped.items() if n]
