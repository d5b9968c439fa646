"""K patient-disjoint folds for cross-validated fairness (``embedkit data folds``).

Patients are dealt into K folds stratified by class x sex x age band; in round k, fold k is the
test set and the other folds are split patient-disjointly and stratified into train and validation
(validation share 1/8 of them by default: with K = 5 every round keeps the paper's 7:1:2). Every
image is tested exactly once over the K rounds; each round is an ordinary manifest, so every
experiment runs on it unchanged and from the same embedding store.
"""

from __future__ import annotations

from pathlib import Path

from embedkit.data.splits import patient_parts
from embedkit.errors import EmbedkitError
from embedkit.manifest import COLUMNS, read_manifest, write_manifest

VAL_SHARE = 1 / 8


def _cells(rows: list[dict]) -> list[tuple]:
    from embedkit.manifest import age_group

    return [(r["label"], r["sex"], age_group(r["age"])) for r in rows]


def make_folds(manifest: str | Path, out: str | Path, *, k: int = 5, seed: int = 0,
               val_share: float = VAL_SHARE) -> list[Path]:
    """Write ``out/fold-<i>.csv`` for i < k (the same rows, each with its round's split); returns the paths."""
    if k < 2:
        raise EmbedkitError(f"--k {k}: cross-validation needs at least 2 folds")
    if not 0 < val_share < 1:
        raise EmbedkitError(f"--val-share {val_share}: choose a fraction between 0 and 1")
    m = read_manifest(manifest)
    rows, patients = m.rows, [r["patient_id"] for r in m.rows]
    if len(set(patients)) < k:
        raise EmbedkitError(f"{manifest}: {len(set(patients))} patients cannot fill {k} folds")
    fold = patient_parts(patients, _cells(rows), seed=seed, fractions=[1 / k] * k)
    extra = tuple(c for c in rows[0] if c not in COLUMNS and c != "fold") + ("fold",)
    paths = []
    for i in range(k):
        rest = [j for j in range(len(rows)) if fold[j] != i]
        inner = patient_parts([patients[j] for j in rest], _cells([rows[j] for j in rest]), seed=seed + 1 + i,
                              fractions=[1 - val_share, val_share])
        split = {j: "test" for j in range(len(rows)) if fold[j] == i} | {j: ("train", "val")[p] for j, p in zip(rest, inner)}
        out_rows = [dict(r, split=split[j], path=str(m.image_path(r).resolve()), fold=fold[j]) for j, r in enumerate(rows)]
        paths.append(write_manifest(Path(out) / f"fold-{i}.csv", out_rows, extra))
    return paths
