"""Results as data: one tidy table of every number the report shows, from the same summaries.

A row per dataset x model x method x seed (a seed folder's name, or ``all`` for the aggregate over seeds)
x attribute x group x metric. Overall metrics have no attribute; per-class F1 has attribute ``class``; a
group's metrics name their attribute and group; a gap names its attribute and no group. ``value`` is the
seed's value or the mean over seeds, ``ci_low``/``ci_high`` its 95 % interval, ``p`` the permutation p-value
(the median over seeds for ``all``), ``q`` that p adjusted over the report's family (aggregate rows only),
``noise_floor`` the median |gap| under the permutation null, ``n`` the rows (images) it was computed on.
"""

from __future__ import annotations

from pathlib import Path

from embedkit.errors import EmbedkitError
from embedkit.report.summary import Group

COLUMNS = ("dataset", "model", "method", "seed", "attribute", "group", "metric", "value", "ci_low", "ci_high", "p", "q",
           "noise_floor", "n")
OVERALL = ("accuracy", "f1_macro", "var_f1", "ece", "ece_binned")
FORMATS = ("csv", "parquet", "json")
SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".json": "json"}


def _row(g: Group, seed: str, attribute: str, group: str, metric: str, value, ci=None, **extra) -> dict:
    lo, hi = ci if ci else (None, None)
    return {"dataset": g.dataset, "model": g.model, "method": g.method, "seed": seed, "attribute": attribute,
            "group": group, "metric": metric, "value": value, "ci_low": lo, "ci_high": hi, "p": None, "q": None,
            "noise_floor": None, "n": None} | extra


def _aggregate(g: Group) -> list[dict]:
    s, first = g.summary, g.per_seed[0]
    out = [_row(g, "all", "", "", m, s[m]["mean"], s[m]["ci"], n=first["n"]) for m in OVERALL if m in s]
    out += [_row(g, "all", "class", c, "f1", e["mean"], e["ci"]) for c, e in s.get("f1", {}).items()]
    for a, groups in s.get("groups", {}).items():
        for name, metrics in groups.items():
            n = first["groups"][a][name]["n"]
            out += [_row(g, "all", a, name, m, e["mean"], e["ci"], n=n) for m, e in metrics.items()]
    for a, gaps in s.get("fairness", {}).items():
        for gap, e in gaps.items():
            out.append(_row(g, "all", a, "", gap, e["mean"], e["ci"], p=s["p_value"][a].get(gap),
                            q=s.get("q_value", {}).get(a, {}).get(gap), noise_floor=s["noise_floor"][a].get(gap)))
    return out


def _seed(g: Group, seed: str, r: dict) -> list[dict]:
    ci = r["ci"]
    out = [_row(g, seed, "", "", m, r[m], ci[m], n=r["n"]) for m in OVERALL]
    out += [_row(g, seed, "class", c, "f1", v, ci["f1"][c]) for c, v in r["f1"].items()]
    for a, groups in r["groups"].items():
        for name, metrics in groups.items():
            out += [_row(g, seed, a, name, m, v, ci["groups"][a][name][m], n=metrics["n"])
                    for m, v in metrics.items() if m != "n"]
    for a, gaps in r["fairness"].items():
        out += [_row(g, seed, a, "", gap, v, ci["fairness"][a][gap], p=r["p_value"][a][gap], noise_floor=r["null"][a][gap])
                for gap, v in gaps.items()]
    return out


def rows(groups: list[Group]) -> list[dict]:
    """Every number of every group: the aggregate over seeds first, then each seed's own."""
    out = []
    for g in groups:
        out += _aggregate(g)
        for seed, r in zip(g.seeds, g.per_seed):
            out += _seed(g, seed, r)
    return out


def table(groups: list[Group]):
    """The rows as a pandas DataFrame with the documented columns."""
    return frame(rows(groups))


def frame(records: list[dict]):
    """Rows (classes' or findings') as the documented table; ``n`` a count (pandas' nullable integer: 33, not
    33.0, and empty where a row has none)."""
    import pandas as pd

    return pd.DataFrame(records, columns=list(COLUMNS)).astype({"n": "Int64"})


def format_of(out: Path | None, fmt: str | None) -> str:
    """The format to write: the one asked for, else the file's suffix, else CSV. A file whose suffix names another
    format, or an unknown one, is refused: CSV written to results.parquet or results.xlsx would not load."""
    named = SUFFIXES.get(out.suffix.lower()) if out is not None else None
    if out is None and fmt == "parquet":
        raise EmbedkitError("--format parquet: Parquet is binary; give --out FILE.parquet")
    if out is not None and out.suffix and named is None and fmt is None:
        raise EmbedkitError(f"--out {out}: give a .csv, .parquet or .json file, or say which with --format")
    if named and fmt and named != fmt:
        raise EmbedkitError(f"--out {out} names a {named} file but --format is {fmt}: drop one or make them agree")
    return fmt or named or "csv"


def write(frame, out: Path, fmt: str) -> Path:
    """Write the table atomically as CSV, Parquet or JSON (records)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    if fmt == "csv":
        frame.to_csv(tmp, index=False)
    elif fmt == "parquet":
        frame.to_parquet(tmp, index=False)
    else:
        frame.to_json(tmp, orient="records", indent=1)
    tmp.replace(out)
    return out

