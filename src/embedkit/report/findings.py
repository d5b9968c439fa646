"""What the report says first, in a few sentences: per declared attribute (intersections included), which
model × method runs show a gap beyond its noise floor, how large, and which group is worst and best; and
whether a planted bias (the phantom's ``phantom.json``) was recovered. Every single gap is in the heatmap
and the tables.

A gap is a finding when its CI excludes 0, its (median over seeds) permutation p-value, adjusted over the
report's whole family of tests (Benjamini–Hochberg unless Holm is asked for), is below 0.05 — the rule of
``metrics.suite.significant`` applied to q — and its magnitude exceeds the noise floor.
"""

from __future__ import annotations

import json
from collections import Counter
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
    worst: str | None = None              # the group with the lowest mean macro F1 in this run
    best: str | None = None

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
            worst, best = _extremes(g, attr)
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
                                   sign_changes(g.summary.get("folds"), attr, gap) if gap == "f1_gap" else None,
                                   worst, best))
    return out


def planted_bias(groups: list[Group]) -> list[dict]:
    """The biases recorded in phantom.json beside the runs' manifest (or the folds' phantom), each with the runs that
    recovered it (a significant F1 gap favouring the other group) and those that did not."""
    manifests = {g.manifest for g in groups if g.manifest}
    out = []
    for m in sorted(manifests):
        meta = next((d / "phantom.json" for d in Path(m).parents[:2] if (d / "phantom.json").is_file()), None)
        if meta is None:      # beside the manifest, or above a fold's manifest (<phantom>/folds/fold-<i>.csv)
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


def _extremes(g: Group, attr: str) -> tuple[str | None, str | None]:
    """The groups with the lowest and the highest mean macro F1 (a planted fainter group should be the first)."""
    f1 = {x: (lookup(g.summary, f"groups/{attr}/{x}/f1_macro") or {}).get("mean") for x in g.attributes[attr]["groups"]
          if x not in g.attributes[attr]["too_small"]}
    f1 = {x: v for x, v in f1.items() if v is not None}
    return (min(f1, key=f1.get), max(f1, key=f1.get)) if f1 else (None, None)


def _worst(g: Group, attr: str) -> str | None:
    return _extremes(g, attr)[0]


ADJUSTED = {"bh": "Benjamini–Hochberg false-discovery-rate q", "holm": "Holm-adjusted p"}


def headline(found: list[Finding], planted: list[dict], family: int, adjust: str) -> list[str]:
    """The opening sentences of the report."""
    beyond = [f for f in found if f.significant]
    lines = [f"The family of tests holds {family} fairness gaps (model × method × attribute × gap); each p-value is "
             f"adjusted over all of them ({ADJUSTED[adjust]}), and a finding needs q < 0.05, a CI excluding 0 and a "
             "gap beyond its noise floor."]
    runs = len({(f.model, f.method) for f in found})
    if not beyond:
        lines.append(f"No fairness gap exceeds its noise floor in any of the {runs} model × method combinations: "
                     "every gap here is within what shuffling the group labels produces.")
    lines += attribute_lines(found, runs)
    for b in planted:
        total = len(b["recovered"]) + len(b["missed"])
        lines.append(f"Planted bias ({b['attribute']} = {b['group']}, findings {b['strength']:.0%} fainter): recovered "
                     f"as a significant F1 gap by {len(b['recovered'])} of {total} model × method runs"
                     + (f" ({', '.join(b['recovered'][:8])}{' …' if len(b['recovered']) > 8 else ''})." if b["recovered"]
                        else "."))
    return lines


def attribute_lines(found: list[Finding], runs: int) -> list[str]:
    """One sentence per declared attribute, the attribute with the largest excess over its floor first."""
    by_attr: dict[str, list[Finding]] = {}
    for f in found:
        by_attr.setdefault(f.attribute, []).append(f)
    lines = []
    for attr, fs in sorted(by_attr.items(), key=lambda kv: -max((f.excess for f in kv[1] if f.significant), default=-1)):
        sig = [f for f in fs if f.significant]
        if not sig:
            lines.append(f"{attr}: no gap beyond its noise floor in any of the {runs} runs.")
            continue
        hit = {(f.model, f.method) for f in sig}
        kinds = ", ".join(f"{sum(f.gap == g for f in sig)} {NAMES[g]}" for g in GAPS if any(f.gap == g for f in sig))
        sizes = sorted(abs(f.value) for f in sig)
        worst, best = Counter(f.worst for f in sig if f.worst), Counter(f.best for f in sig if f.best)
        top = max(sig, key=lambda f: f.excess)
        sides = (f"; worst group {worst.most_common(1)[0][0]} ({worst.most_common(1)[0][1]} of {len(sig)}), best "
                 f"{best.most_common(1)[0][0]} ({best.most_common(1)[0][1]} of {len(sig)})" if worst and best else "")
        lines.append(f"{attr}: {len(sig)} gap(s) beyond the noise floor in {len(hit)} of {runs} runs ({kinds}), "
                     f"|gap| {sizes[0]:.3f}–{sizes[-1]:.3f}{sides}; the largest: {top.sentence()}.")
    return lines
