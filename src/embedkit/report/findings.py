"""What the report says first: which fairness gaps exceed their noise floor, in words, and whether
a planted bias (the phantom's ``phantom.json``) was recovered.

A gap is a finding when its CI excludes 0, its (median over seeds) permutation p-value, adjusted over the
report's whole family of tests (Benjamini–Hochberg unless Holm is asked for), is below 0.05 — the rule of
``metrics.suite.significant`` applied to q — and its magnitude exceeds the noise floor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from embedkit.metrics.suite import significant
from embedkit.report.summary import Group, sign_changes
from embedkit.report.tables import GAPS, lookup

PHANTOM_ATTRIBUTE = {"sex": "sex", "age_group": "age", "site": "site"}   # phantom.json's names -> declared ones
NAMES = {"f1_gap": "F1 gap", "eqodds": "equalized-odds gap", "ece_gap": "ECE gap (Eq. 4)",
         "ece_binned_gap": "ECE gap (15 bins)"}


@dataclass
class Finding:
    model: str
    method: str
    attribute: str
    gap: str
    value: float
    ci: tuple[float | None, float | None]
    floor: float
    p: float | None
    q: float | None
    significant: bool
    groups: tuple[str, ...] = ()          # the attribute's groups in declared order (f1_gap: first - second)
    fold_signs: tuple[int, int] | None = None   # cross-validation: folds where the gap is positive, negative

    @property
    def excess(self) -> float:
        return abs(self.value) - self.floor

    def sentence(self) -> str:
        lo, hi = self.ci
        side = ""
        if self.gap == "f1_gap" and len(self.groups) == 2:
            side = f", {self.groups[0] if self.value > 0 else self.groups[1]} better"
        elif self.gap == "f1_gap":
            side = " (max − min over groups)"
        p = "undefined" if self.p is None else f"{self.p:.3f}"
        q = "undefined" if self.q is None else f"{self.q:.3f}"
        return (f"{self.model} / {self.method}: {self.attribute} {NAMES[self.gap]} {self.value:+.3f} "
                f"[{lo:.3f}, {hi:.3f}]{side}; noise floor {self.floor:.3f}, p = {p}, q = {q}"
                + (f"; its sign differs across folds ({self.fold_signs[0]} positive, {self.fold_signs[1]} negative)"
                   if self.fold_signs else ""))


def gaps(groups: list[Group]) -> list[Finding]:
    """Every (model, method, attribute, gap) with its value, CI, floor, p and verdict."""
    out = []
    for g in groups:
        for attr, settings in g.attributes.items():
            if len(settings.get("columns", ())) > 1:
                continue  # intersections are in the tables; the headline speaks of single attributes
            kept = tuple(x for x in settings["groups"] if x not in settings["too_small"])
            for gap in GAPS:
                entry = lookup(g.summary, f"fairness/{attr}/{gap}") or {}
                if entry.get("mean") is None:
                    continue
                ci = tuple(entry.get("ci") or (None, None))
                p, floor = g.summary["p_value"][attr][gap], g.summary["noise_floor"][attr][gap]
                q = g.summary["q_value"][attr][gap]
                verdict = significant(list(ci), q) and abs(entry["mean"]) > floor
                out.append(Finding(g.model, g.label, attr, gap, entry["mean"], ci, floor, p, q, verdict, kept,
                                   sign_changes(g.summary.get("folds"), attr, gap) if gap == "f1_gap" else None))
    return out


def planted_bias(groups: list[Group]) -> list[dict]:
    """The biases recorded in phantom.json beside the runs' manifest, each with the runs that
    recovered it (a significant F1 gap favouring the other group) and those that did not."""
    manifests = {g.manifest for g in groups if g.manifest}
    out = []
    for m in sorted(manifests):
        meta = Path(m).with_name("phantom.json")
        if not meta.is_file():
            continue
        for bias in json.loads(meta.read_text()).get("bias", []):
            attr, group = PHANTOM_ATTRIBUTE.get(bias["attribute"], bias["attribute"]), bias["group"]
            runs = [g for g in groups if g.manifest == m and attr in g.attributes]
            hits = []
            for g in runs:
                entry = lookup(g.summary, f"fairness/{attr}/f1_gap") or {}
                if entry.get("mean") is None:
                    continue
                ci, q = list(entry.get("ci") or (None, None)), g.summary["q_value"][attr]["f1_gap"]
                hits.append((f"{g.model} / {g.method}", significant(ci, q) and _worst(g, attr) == group))
            if not runs:
                continue
            out.append({"attribute": attr, "group": group, "strength": bias["strength"],
                        "recovered": [n for n, ok in hits if ok], "missed": [n for n, ok in hits if not ok]})
    return out


def _worst(g: Group, attr: str) -> str | None:
    """The group with the lowest mean macro F1 (the fainter group should be it)."""
    f1 = {x: (lookup(g.summary, f"groups/{attr}/{x}/f1_macro") or {}).get("mean") for x in g.attributes[attr]["groups"]}
    f1 = {x: v for x, v in f1.items() if v is not None}
    return min(f1, key=f1.get) if f1 else None


ADJUSTED = {"bh": "Benjamini–Hochberg false-discovery-rate q", "holm": "Holm-adjusted p"}


def headline(found: list[Finding], planted: list[dict], family: int, adjust: str) -> list[str]:
    """The opening sentences of the report."""
    beyond = [f for f in found if f.significant]
    lines = [f"The family of tests holds {family} fairness gaps (model × method × attribute × gap); each p-value is "
             f"adjusted over all of them ({ADJUSTED[adjust]}), and a finding needs q < 0.05, a CI excluding 0 and a "
             "gap beyond its noise floor."]
    runs = len({(f.model, f.method) for f in found})
    if beyond:
        lines.append(f"{len(beyond)} fairness gap(s) exceed their noise floor (CI excludes 0, q < 0.05) "
                     f"across {runs} model × method combinations; the largest excess over the floor first.")
    else:
        lines.append(f"No fairness gap exceeds its noise floor in any of the {runs} model × method combinations: "
                     "every gap here is within what shuffling the group labels produces.")
    for b in planted:
        total = len(b["recovered"]) + len(b["missed"])
        lines.append(f"Planted bias ({b['attribute']} = {b['group']}, findings {b['strength']:.0%} fainter): recovered "
                     f"as a significant F1 gap by {len(b['recovered'])} of {total} model × method runs"
                     + (f" ({', '.join(b['recovered'][:8])}{' …' if len(b['recovered']) > 8 else ''})." if b["recovered"]
                        else "."))
    return lines
