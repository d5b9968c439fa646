"""The report of binary and multi-label tasks (predictions with ``true_F`` / ``prob_F`` columns): per-finding
AUROC by group, underdiagnosis by subgroup and intersection (Seyyed-Kalantari et al.'s Fig. 2 form), and a
findings x attributes heatmap of AUROC gaps; the findings in words lead with the largest AUROC and
underdiagnosis gaps beyond their noise floors. Seeds aggregate as in ``summary`` (mean ± sd, a CI pooling every
seed's bootstrap); every gap's p is adjusted over the report's whole family of gap tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from embedkit.metrics import aggregate_seeds
from embedkit.metrics.intervals import adjust
from embedkit.metrics.suite import ALPHA, significant
from embedkit.report.summary import median
from embedkit.report.tables import fmt, lookup
from embedkit.evaluations import evaluate_folder
from embedkit.predictions import PREDICTIONS
from embedkit.runs import read_record

SENTENCES = 8        # the findings in words; the tables hold every gap


@dataclass
class FindingGroup:
    """All seeds of one (dataset, model, method) of a findings task."""

    dataset: str
    model: str
    method: str
    runs: list[Path]
    summary: dict
    per_seed: list = field(default_factory=list, repr=False)
    manifest: str | None = None          # the manifest its runs read (phantom.json beside it: planted effects)

    @property
    def findings(self) -> list[str]:
        return self.per_seed[0]["settings"]["findings"]

    @property
    def attributes(self) -> dict:
        return self.per_seed[0]["settings"]["attributes"]

    def gap_keys(self) -> list[str]:
        """Every tested gap: ``<attr>/underdiagnosis_gap``, ``<attr>/auroc_gap/<F>``, ``<attr>/eqodds/<F>``."""
        keys = []
        for a in self.attributes:
            keys.append(f"{a}/underdiagnosis_gap")
            keys += [f"{a}/{gap}/{f}" for gap in ("auroc_gap", "eqodds") for f in self.findings]
        return [k for k in keys if self.summary["p_value"].get(k) is not None]


def find(runs_dir: Path) -> dict:
    """The runs of a binary / multi-label task under ``runs_dir`` ((dataset, model, method) -> seed folders), or
    {} when it holds multiclass runs; a folder holding both kinds is refused (one task per runs folder)."""
    from embedkit.errors import EmbedkitError
    from embedkit.report.summary import find_runs

    found = find_runs(runs_dir) if Path(runs_dir).is_dir() else {}
    kinds = {key: is_findings_run(folders[0]) for key, folders in found.items()}
    if len(set(kinds.values())) > 1:
        raise EmbedkitError(f"{runs_dir}: holds runs of a multiclass and of a findings task; give each task its own "
                            "runs folder (--runs-dir) and report each")
    return {k: v for k, v in found.items() if kinds[k]}


def is_findings_run(folder: Path) -> bool:
    """Whether a run folder's predictions are of a binary or multi-label task."""
    with (folder / PREDICTIONS).open() as fh:
        return any(c.startswith("true_") for c in fh.readline().strip().split(","))


def summarise(found: dict, *, n_boot: int, attributes, threads: int | None = None) -> list[FindingGroup]:
    """(dataset, model, method) -> seed folders, each evaluated on test (thresholds chosen on its val rows)."""
    groups = []
    for (dataset, model, method), folders in sorted(found.items()):
        records = {f: read_record(f) or {} for f in folders}
        results = [evaluate_folder(f, attributes=attributes, split="test", n_boot=n_boot, n_perm=n_boot, seed=i,
                                   return_replicates=True, threshold=_rule(records[f]),
                                   threads=threads)
                   for i, f in enumerate(folders)]
        summary = aggregate_seeds(results)
        flat = {}
        for r in results:
            for key in _flat(r["p_value"]):
                flat.setdefault(key, []).append(lookup(r["p_value"], key))
        summary["p_value"] = {k: median(v) for k, v in flat.items()}
        summary["noise_floor"] = {k: median([lookup(r["null"], k) for r in results]) for k in flat}
        groups.append(FindingGroup(dataset, model, method, folders, summary, results,
                                   records[folders[0]].get("manifest")))
    return groups


def _rule(record: dict) -> str:
    """The threshold rule the run chose its thresholds by (its record's metrics settings)."""
    from embedkit.spec import TASK

    return record.get("metrics", {}).get("settings", {}).get("threshold_rule", TASK.threshold)


def _flat(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in tree.items():
        out += _flat(v, f"{prefix}{k}/") if isinstance(v, dict) else [f"{prefix}{k}"]
    return out


def adjust_family(groups: list[FindingGroup], method: str) -> int:
    """q-values of every gap over the report's family; returns its size."""
    keys = [(g, k) for g in groups for k in g.gap_keys()]
    q = adjust([g.summary["p_value"][k] for g, k in keys], method)
    for g in groups:
        g.summary["q_value"] = {}
    for (g, k), v in zip(keys, q):
        g.summary["q_value"][k] = v
    return len(keys)


@dataclass
class Gap:
    """One gap of one (model, method): its value, CI, floor, q, and the groups' values it spans."""

    group: FindingGroup
    key: str                   # <attr>/<gap>[/<finding>]
    value: dict
    floor: float
    q: float | None

    @property
    def significant(self) -> bool:
        return significant(list(self.value.get("ci") or (None, None)), self.q)

    def sentence(self) -> str:
        attr, gap, *finding = self.key.split("/")
        g = self.group
        metric = "underdiagnosis" if gap == "underdiagnosis_gap" else f"auroc/{finding[0]}" if gap == "auroc_gap" else None
        spans = ""
        if metric:
            values = {name: lookup(g.summary, f"groups/{attr}/{name}/{metric}") for name in g.attributes[attr]["groups"]}
            values = {k: v["mean"] for k, v in values.items() if v and v.get("mean") is not None}
            if values:
                worst = max(values, key=values.get) if gap == "underdiagnosis_gap" else min(values, key=values.get)
                best = min(values, key=values.get) if gap == "underdiagnosis_gap" else max(values, key=values.get)
                spans = f" — worst {attr} = {worst} ({values[worst]:.3f}), best {best} ({values[best]:.3f})"
        what = {"underdiagnosis_gap": "underdiagnosis (images with a finding called No Finding)",
                "auroc_gap": f"AUROC of {finding[0] if finding else ''}",
                "eqodds": f"equalized odds of {finding[0] if finding else ''}"}[gap]
        return (f"{g.model} / {g.method}: {what} differs by {attr}{spans}; gap {fmt(self.value)}, noise floor "
                f"{self.floor:.3f}, q = {self.q:.3g}.")


def gaps(groups: list[FindingGroup]) -> list[Gap]:
    out = []
    for g in groups:
        for k in g.gap_keys():
            value = lookup(g.summary, f"fairness/{k}") or {}
            out.append(Gap(g, k, value, g.summary["noise_floor"].get(k) or 0.0, g.summary["q_value"].get(k)))
    return out


def headline(found: list[Gap], family: int, method: str, planted: dict) -> list[str]:
    """At most ``SENTENCES`` sentences: the largest underdiagnosis and AUROC gaps beyond their floors, and
    whether every attribute without a planted effect stayed quiet."""
    beyond = sorted((f for f in found if f.significant), key=lambda f: -((f.value.get("mean") or 0) - f.floor))
    lines = [f"{len(beyond)} of {family} gap tests are beyond chance (q < {ALPHA} after "
             f"{'Benjamini–Hochberg' if method == 'bh' else 'Holm'} over the whole family, CI excluding 0)."]
    under = [f for f in beyond if f.key.endswith("underdiagnosis_gap")]
    other = [f for f in beyond if not f.key.endswith("underdiagnosis_gap")]
    plants = _planted_lines(found, planted) if planted else []
    return lines + [f.sentence() for f in (under[:4] + other)[:max(SENTENCES - 1 - len(plants), 2)]] + plants


def _worst(g: FindingGroup, attr: str) -> str | None:
    """The group with the highest underdiagnosis rate (mean over seeds)."""
    rates = {n: (lookup(g.summary, f"groups/{attr}/{n}/underdiagnosis") or {}).get("mean")
             for n in g.attributes[attr]["groups"]}
    rates = {n: v for n, v in rates.items() if v is not None}
    return max(rates, key=rates.get) if rates else None


def _planted_lines(found: list[Gap], planted: dict[str, float]) -> list[str]:
    """Whether each planted underdiagnosis was recovered (a significant gap with the planted group worst), and
    whether the attributes with nothing planted stayed quiet."""
    under = [f for f in found if f.key.endswith("/underdiagnosis_gap")]
    lines = []
    for key, strength in planted.items():
        attr, group = key.split("=", 1)
        runs = [f for f in under if f.key.split("/")[0] == attr]
        hits = [f for f in runs if f.significant and _worst(f.group, attr) == group]
        lines.append(f"Planted: findings {strength:g} fainter for {key}. The underdiagnosis gap for {attr} is recovered "
                     f"(beyond its floor, q < {ALPHA}, {group} worst) in {len(hits)} of {len(runs)} runs"
                     + (f": {', '.join(f'{f.group.model} / {f.group.method}' for f in hits)}." if hits else "."))
    touched = {k.split("=")[0] for k in planted}
    for attr in sorted({f.key.split("/")[0] for f in under} - touched):
        if any(t in attr.split("_") or t == attr for t in touched):      # an intersection with a planted attribute
            continue
        loud = [f for f in under if f.key.split("/")[0] == attr and f.significant]
        lines.append(f"Nothing planted for {attr}: " + ("no run shows a significant underdiagnosis gap." if not loud else
                     f"{len(loud)} run(s) show a significant underdiagnosis gap "
                     f"({', '.join(f'{f.group.model} / {f.group.method}' for f in loud)})."))
    return lines


def tables(groups: list[FindingGroup]) -> list[tuple[str, list[str], list[list[str]]]]:
    """Utility per (model, method), underdiagnosis per group, and every gap with CI, floor, p and q."""
    utility = [[g.model, g.method, fmt(g.summary.get("auroc_macro")), fmt(g.summary.get("auprc_macro")),
                fmt(g.summary.get("underdiagnosis"))] for g in groups]
    per_group = [[g.model, g.method, a, name, fmt(lookup(g.summary, f"groups/{a}/{name}/underdiagnosis")),
                  *(fmt(lookup(g.summary, f"groups/{a}/{name}/auroc/{f}")) for f in g.findings)]
                 for g in groups for a, s in g.attributes.items() for name in s["groups"]]
    rows = [[f.group.model, f.group.method, *f.key.split("/", 2)[:2], (f.key.split("/", 2) + [""])[2] or "all",
             fmt(f.value), f"{f.floor:.3f}", _p(f.group.summary["p_value"].get(f.key)), _p(f.q),
             "*" if f.significant else ""] for f in gaps(groups)]
    findings = groups[0].findings if groups else []
    return [("Utility (test)", ["model", "method", "macro AUROC", "macro AUPRC", "underdiagnosis"], utility),
            ("Per group: underdiagnosis and AUROC per finding", ["model", "method", "attribute", "group",
                                                                 "underdiagnosis", *(f"AUROC {f}" for f in findings)],
             per_group),
            ("Fairness gaps (max − min over groups)", ["model", "method", "attribute", "gap", "finding",
                                                       "value ± sd [95% CI]", "noise floor", "p", "q", ""], rows)]


def _p(value) -> str:
    return "—" if value is None else f"{value:.3g}"


def figures(groups: list[FindingGroup], out: Path) -> dict[str, Path]:
    """AUROC per finding by group, underdiagnosis by subgroup, and the gaps heatmap (one file each)."""
    from embedkit.report.findings_figures import auroc_by_group, gap_heatmap, underdiagnosis_by_group

    out.mkdir(parents=True, exist_ok=True)
    figs = {"auroc_by_group": auroc_by_group(groups, out / "auroc_by_group.png"),
            "underdiagnosis_by_group": underdiagnosis_by_group(groups, out / "underdiagnosis_by_group.png"),
            "findings": gap_heatmap(groups, out / "findings.png")}
    return {k: v for k, v in figs.items() if v is not None}


CAPTIONS = {
    "auroc_by_group": "AUROC per finding by group (mean over seeds, 95% CI), one panel per attribute",
    "underdiagnosis_by_group": "Underdiagnosis by subgroup and intersection: the share of test images with a finding "
                               "called No Finding (95% CI), per model and method",
}
CONVENTIONS = (
    "Binary and multi-label findings: each finding's threshold is chosen on validation (the rule in the run's "
    "settings; f1 by default, as Seyyed-Kalantari et al. 2021), never on test. Underdiagnosis is the false-positive "
    "rate of a No Finding label when the task has one, else the share of images with at least one finding where no "
    "finding reaches its threshold. Gaps are max − min over the groups of each attribute (groups under 10 test images "
    "left out); eqodds is ½ (spread of TPR + spread of FPR); a group without positive (or negative) images of a finding "
    "has no AUROC (undefined, never 0). CIs resample patients; p-values permute group labels per patient; q adjusts p "
    "over the report's whole family of gap tests; * marks q < 0.05 with a CI excluding 0."
)


def planted(groups: list[FindingGroup]) -> dict[str, float]:
    """The biases recorded in phantom.json beside the runs' manifest: 'sex=F' -> strength."""
    import json

    from embedkit.report.findings import PHANTOM_ATTRIBUTE

    out = {}
    for g in groups:
        meta = Path(g.manifest or "").with_name("phantom.json")
        if g.manifest and meta.is_file():
            for b in json.loads(meta.read_text()).get("bias", []):
                out[f"{PHANTOM_ATTRIBUTE.get(b['attribute'], b['attribute'])}={b['group']}"] = b["strength"]
    return out


def result_rows(groups: list[FindingGroup]) -> list[dict]:
    """The aggregate numbers as the results table's rows (``report.results.COLUMNS``): per-finding metrics
    under attribute ``finding``, group metrics under their attribute, gaps with p, q and noise floor."""
    from embedkit.report.results import COLUMNS

    out = []

    def row(g, attribute, group, metric, entry, **extra):
        lo, hi = (entry or {}).get("ci") or (None, None)
        out.append(dict.fromkeys(COLUMNS) | {"dataset": g.dataset, "model": g.model, "method": g.method, "seed": "all",
                                             "attribute": attribute, "group": group, "metric": metric,
                                             "value": (entry or {}).get("mean"), "ci_low": lo, "ci_high": hi} | extra)

    for g in groups:
        s = g.summary
        for m in ("auroc_macro", "auprc_macro", "underdiagnosis"):
            row(g, "", "", m, s.get(m), n=g.per_seed[0]["n"])
        for m in ("auroc", "auprc", "tpr", "fpr", "ece"):
            for f in g.findings:
                row(g, "finding", f, m, lookup(s, f"{m}/{f}"))
        for a, spec in g.attributes.items():
            for name in spec["groups"]:
                n = lookup(g.per_seed[0], f"groups/{a}/{name}/n")
                row(g, a, name, "underdiagnosis", lookup(s, f"groups/{a}/{name}/underdiagnosis"), n=n)
                for m in ("auroc", "tpr", "fpr"):
                    for f in g.findings:
                        row(g, a, name, f"{m}/{f}", lookup(s, f"groups/{a}/{name}/{m}/{f}"), n=n)
        for k in g.gap_keys():
            a, metric = k.split("/", 1)
            row(g, a, "", metric, lookup(s, f"fairness/{k}"), p=s["p_value"].get(k), q=s["q_value"].get(k),
                noise_floor=s["noise_floor"].get(k))
    return out


def build(runs_dir: Path, out: Path, found: dict, *, n_boot: int, attributes, adjust: str,
          threads: int | None = None) -> Path:
    """The report of a runs folder of binary / multi-label runs: report.md, report.html, figures, results.csv
    and summary.json, written like the multiclass report."""
    import base64
    import json

    from markdown_it import MarkdownIt

    from embedkit.report import frontier, render, results

    groups = summarise(found, n_boot=n_boot, attributes=attributes, threads=threads)
    family = adjust_family(groups, adjust)
    figs = figures(groups, out / "figures")
    compared = frontier.table(groups, adjust)                # binary interventions against ERM, as for classes
    context = {
        "runs_dir": str(runs_dir), "n_runs": sum(len(g.runs) for g in groups), "n_groups": len(groups), "scope": "", "omitted": [],
        "headline": headline(gaps(groups), family, adjust, planted(groups)) + frontier.headline(compared), "beyond": [],
        "more": 0, "findings_figure": "findings.png", "tables": ([compared] if compared else []) + tables(groups),
        "audits": [], "audit_headers": ([], []),
        "figures": [(n, CAPTIONS.get(n, n)) for n in figs if n != "findings"],
        "conventions": CONVENTIONS, "conventions_html": MarkdownIt("commonmark").render(CONVENTIONS),
        "images": {p.name: base64.b64encode(p.read_bytes()).decode() for p in figs.values()},
    }
    render.write(out, context)
    results.write(results.frame(result_rows(groups)), out / "results.csv", "csv")
    summary = {"family": {"tests": family, "adjust": adjust}, **{f"{g.dataset}/{g.model}/{g.method}":
                                                                  {k: v for k, v in g.summary.items()} for g in groups}}
    tmp = out / ".summary.json.partial"
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(out / "summary.json")
    return out / "report.md"
