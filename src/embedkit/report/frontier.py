"""Interventions against ERM: the utility–fairness frontier per model, and a table of what moved beyond
noise and at what utility cost (paired bootstrap on the same test images, ``metrics.compare``).

An intervention's runs are named ``<head>+<intervention>-<attribute>`` (e.g. ``linear+reweight-sex``); its
baseline is the plain ``<head>`` run of the same model and dataset."""

from __future__ import annotations

import re
from pathlib import Path

from embedkit.metrics import compare, intervals
from embedkit.metrics.compare import paired_changes, shrank_beyond_noise, widened_beyond_noise
from embedkit.report.findings import ADJUSTED
from embedkit.report.summary import Group
from embedkit.report.tables import lookup
from embedkit.spec import FAIRNESS

UTILITY_NAMES = {"accuracy": "accuracy", "auroc_macro": "macro AUROC"}
NAME = re.compile(r"^(?P<head>[^+]+)\+(?P<intervention>.+)-(?P<attribute>[^-]+)$")


def pairs(groups: list[Group]) -> list[tuple[Group, Group, str, str]]:
    """(ERM group, intervention group, intervention, attribute) for every intervention with its baseline."""
    by = {(g.dataset, g.model, g.method): g for g in groups}
    out = []
    for g in groups:
        m = NAME.match(g.method)
        base = by.get((g.dataset, g.model, m["head"])) if m else None
        if base is not None and m["attribute"] in g.attributes:
            out.append((base, g, m["intervention"], m["attribute"]))
    return out


def _fmt(change: dict) -> str:
    if change["change"] is None:
        return "—"
    lo, hi = change["ci"]
    return f"{change['change']:+.3f} [{lo:+.3f}, {hi:+.3f}]" if lo is not None else f"{change['change']:+.3f}"


def judged_on(group) -> tuple[str, dict[str, str]]:
    """The utility metric and the gaps (name -> metric) an intervention is judged on: the classes', or for a binary
    finding F (interventions on findings are binary) its underdiagnosis, AUROC and equalized-odds gaps."""
    findings = getattr(group, "findings", None)                     # a findings report's groups have them
    if not findings:
        return "accuracy", {g: g for g in compare.GAPS}
    f = findings[0]
    return "auroc_macro", {"underdiagnosis_gap": "underdiagnosis_gap", "auroc_gap": f"auroc_gap/{f}",
                           "eqodds": f"eqodds/{f}"}


def table(groups: list, adjust: str = FAIRNESS.adjust) -> tuple[str, list[str], list[list[str]]] | None:
    """What each intervention changed against ERM: utility and |gap| changes with paired CIs, and the verdict, each
    change's p adjusted over every gap change the table tests (``adjust``: bh or holm)."""
    found = pairs(groups)
    if not found:
        return None
    utility, names = judged_on(found[0][0])                 # one report, one kind of task (runs.check_one_kind)
    compared = []
    for base, g, intervention, attr in found:                 # each binary dataset judged on its own finding
        n, gaps = min(len(base.per_seed), len(g.per_seed)), judged_on(base)[1]
        change = paired_changes(base.per_seed[:n], g.per_seed[:n], attr, utility=(utility,), gaps=tuple(gaps.values()))
        compared.append((base, g, intervention, attr, change[utility], [change[f"|{k}|"] for k in gaps.values()]))
    q = iter(intervals.adjust([c["p"] for *_, changes in compared for c in changes], adjust))
    rows = []
    for base, g, intervention, attr, used, changes in compared:
        judged = [(name, c, next(q)) for name, c in zip(names, changes)]
        shrunk = [name for name, c, qv in judged if shrank_beyond_noise(c, qv)]
        grew = [name for name, c, qv in judged if widened_beyond_noise(c, qv)]
        verdict = ("shrinks " + ", ".join(shrunk) + " beyond noise") if shrunk else "no gap shrank beyond noise"
        if grew:
            verdict += "; widens " + ", ".join(grew)
        rows.append([g.model, base.method, intervention, attr, _fmt(used), *(_fmt(c) for c in changes), verdict])
    return ("Interventions against ERM (change, intervention − ERM, on the same test images; [95% CI] from paired "
            "bootstrap replicates pooled over seeds; a gap shrank (or widened) beyond noise only when its change's "
            f"paired-bootstrap p, adjusted over the table's {len(compared) * len(names)} gap changes "
            f"({ADJUSTED[adjust]}), is below 0.05)",
            ["model", "head", "intervention", "attribute", f"Δ {UTILITY_NAMES[utility]}", *(f"Δ |{n}|" for n in names),
             "verdict"], rows)


def figure(groups: list[Group], out: Path) -> Path | None:
    """Per model: accuracy against |F1 gap| (of the intervention's attribute) for ERM and each
    intervention, with CIs, and ERM's noise floor as a band: points left of it are within noise."""
    found = pairs(groups)
    if not found:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({b.model for b, _, _, _ in found})
    cols = min(3, len(models))                       # small multiples legible at page width, one legend below
    rows = -(-len(models) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.6 * rows + 0.8), squeeze=False, layout="constrained")
    for ax in axes.flat[len(models):]:
        ax.axis("off")
    colours = {}                                     # one colour per method or intervention, the same in every panel
    for ax, model in zip(axes.flat, models):
        mine = [(b, g, i, a) for b, g, i, a in found if b.model == model]
        base, attr = mine[0][0], mine[0][3]
        floor = base.summary["noise_floor"][attr]["f1_gap"]
        ax.axvspan(0, floor, color="0.9", label="ERM noise floor")
        for g, label in [(base, f"{base.method} (ERM)")] + [(g, i) for _, g, i, _ in mine]:
            _point(ax, g, attr, label, colours.setdefault(label, f"C{len(colours) % 10}"))
        ax.set_title(f"{model}: accuracy vs |F1 gap| ({attr})", fontsize=9)
        ax.set_xlabel(f"|F1 gap| ({attr}), absolute", fontsize=8)
        ax.set_ylabel("accuracy", fontsize=8)
    legend = {}
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, h)
    fig.legend(list(legend.values()), list(legend), loc="outside lower center", ncols=min(len(legend), 4), fontsize=8)
    path = out / "frontier.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _point(ax, g: Group, attr: str, label: str, colour: str) -> None:
    acc, gap = lookup(g.summary, "accuracy") or {}, lookup(g.summary, f"fairness/{attr}/f1_gap") or {}
    if acc.get("mean") is None or gap.get("mean") is None:
        return
    x, y = abs(gap["mean"]), acc["mean"]
    lo, hi = sorted(abs(v) for v in gap["ci"]) if gap["ci"][0] is not None else (x, x)
    if gap["ci"][0] is not None and gap["ci"][0] < 0 < gap["ci"][1]:
        lo = 0.0
    ylo, yhi = acc["ci"] if acc["ci"][0] is not None else (y, y)
    ax.errorbar([x], [y], xerr=[[max(x - lo, 0)], [max(hi - x, 0)]], yerr=[[max(y - ylo, 0)], [max(yhi - y, 0)]],
                fmt="o", capsize=2, label=label, color=colour)


def headline(compared) -> list[str]:
    """One sentence on the interventions: which shrank a gap beyond noise, at what change of utility."""
    if not compared:
        return []
    _, _, rows = compared
    helped = [r for r in rows if r[-1].startswith("shrinks")]
    if not helped:
        return [f"None of the {len(rows)} intervention runs shrank a fairness gap beyond noise against ERM "
                "(paired bootstrap on the same test images)."]
    utility = compared[1][4].removeprefix("Δ ")
    shown = "; ".join(f"{r[0]} / {r[1]}+{r[2]} ({r[3]}): {r[-1].split(';')[0]}, {utility} {r[4].split(' [')[0]}"
                      for r in helped[:6])
    return [f"{len(helped)} of {len(rows)} intervention runs shrank a gap beyond noise against ERM: {shown}"
            + (" …" if len(helped) > 6 else "") + "."]
