"""What the report says first: which fairness gaps exceed their noise floor, in words, and whether
a planted bias (the phantom's ``phantom.json``) was recovered.

A gap is a finding when its CI excludes 0 and its (median over seeds) permutation p < 0.05 — the
rule of ``metrics.suite.significant`` — and its magnitude exceeds the noise floor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from embedkit.metrics.suite import significant
from embedkit.report.summary import Group
from embedkit.report.tables import GAPS, lookup

ATTRS = ("sex", "age")
BETTER = {"sex": ("M", "F"), "age": ("young", "old")}  # f1_gap is signed first - second
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
    p: float
    significant: bool

    @property
    def excess(self) -> float:
        return abs(self.value) - self.floor

    def sentence(self) -> str:
        lo, hi = self.ci
        side = ""
        if self.gap == "f1_gap":
            first, second = BETTER[self.attribute]
            side = f", {first if self.value > 0 else second} better"
        return (f"{self.model} / {self.method}: {self.attribute} {NAMES[self.gap]} {self.value:+.3f} "
                f"[{lo:.3f}, {hi:.3f}]{side}; noise floor {self.floor:.3f}, p = {self.p:.3f}")


def gaps(groups: list[Group]) -> list[Finding]:
    """Every (model, method, attribute, gap) with its value, CI, floor, p and verdict."""
    out = []
    for g in groups:
        for attr in ATTRS:
            for gap in GAPS:
                entry = lookup(g.summary, f"fairness/{attr}/{gap}") or {}
                if entry.get("mean") is None:
                    continue
                ci = tuple(entry.get("ci") or (None, None))
                p, floor = g.summary["p_value"][attr][gap], g.summary["noise_floor"][attr][gap]
                verdict = significant(list(ci), p) and abs(entry["mean"]) > floor
                out.append(Finding(g.model, g.method, attr, gap, entry["mean"], ci, floor, p, verdict))
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
            attr, group = bias["attribute"], bias["group"]
            if attr not in BETTER:
                continue
            sign = 1 if group == BETTER[attr][1] else -1  # the fainter group does worse
            runs = [g for g in groups if g.manifest == m]
            hits = []
            for g in runs:
                entry = lookup(g.summary, f"fairness/{attr}/f1_gap") or {}
                if entry.get("mean") is None:
                    continue
                ci, p = list(entry.get("ci") or (None, None)), g.summary["p_value"][attr]["f1_gap"]
                hits.append((f"{g.model} / {g.method}", significant(ci, p) and sign * entry["mean"] > 0))
            out.append({"attribute": attr, "group": group, "strength": bias["strength"],
                        "recovered": [n for n, ok in hits if ok], "missed": [n for n, ok in hits if not ok]})
    return out


def headline(found: list[Finding], planted: list[dict]) -> list[str]:
    """The opening sentences of the report."""
    beyond = [f for f in found if f.significant]
    lines = []
    runs = len({(f.model, f.method) for f in found})
    if beyond:
        lines.append(f"{len(beyond)} fairness gap(s) exceed their noise floor (CI excludes 0, permutation p < 0.05) "
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
