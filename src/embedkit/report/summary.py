"""Every finished run under a runs folder, grouped by (dataset, model, method), seeds aggregated.

Seeds are aggregated as mean ± sd with a CI that pools every seed's bootstrap replicates (seed and
sample variation); noise floors are averaged and p-values take the median over seeds.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedkit.errors import EmbedkitError
from embedkit.metrics import aggregate_seeds
from embedkit.metrics.stats import N_BINS
from embedkit.metrics.suite import GAPS, N_BOOT
from embedkit.evaluations import evaluate_folder
from embedkit.predictions import PREDICTIONS, concat, read_predictions
from embedkit.runs import RECORD, evaluate_predictions


@dataclass
class Group:
    """All seeds of one (dataset, model, method)."""

    dataset: str
    model: str
    method: str
    runs: list[Path]
    summary: dict          # aggregate_seeds output
    reliability: dict      # group -> (conf per bin, acc per bin, count per bin), pooled over seeds
    manifest: str | None = None
    per_seed: list = field(default_factory=list, repr=False)   # each seed's evaluate() with its bootstrap replicates
    kept_probe: int = 0    # fine-tuning runs that selected epoch 0: the linear probe they started from
    seeds: list = field(default_factory=list)   # the seed folders' names, in per_seed's order

    @property
    def label(self) -> str:
        """The method as tables and figures name it: a fine-tuning row that kept its starting probe says so."""
        if not self.kept_probe:
            return self.method
        if self.kept_probe == len(self.runs):
            return f"{self.method} (= linear probe)"
        return f"{self.method} ({self.kept_probe}/{len(self.runs)} = probe)"

    @property
    def attributes(self) -> dict:
        """Declared attribute -> {groups, sign, columns, too_small} (from the metrics' settings)."""
        return self.summary["attributes"]


def find_runs(runs_dir: Path) -> dict[tuple[str, str, str], list[Path]]:
    """(dataset, model, method) -> finished run folders (those with run.json and predictions)."""
    found: dict[tuple[str, str, str], list[Path]] = defaultdict(list)
    for record in sorted(Path(runs_dir).glob(f"*/*/*/seed-*/{RECORD}")):
        folder = record.parent
        if (folder / PREDICTIONS).is_file():
            dataset, model, method = folder.parts[-4:-1]
            found[(dataset, model, method)].append(folder)
    return found


def kept_probe(record: dict) -> bool:
    """A fine-tuning run whose selected epoch is 0 is the linear probe it started from (LP-FT)."""
    init = record.get("init")
    return (isinstance(init, dict) and init.get("kind", "probe") == "probe"
            and record.get("selection", {}).get("best_epoch") == 0)


def reliability_ece(group: Group, cells) -> dict[str, float]:
    """Each cell's 15-bin ECE from its reliability diagram (sum of count × |accuracy − confidence| over the count):
    the number the diagram draws, so the table beside the chosen diagrams agrees with them."""
    out = {}
    for cell in (c for c in cells if c in group.reliability):
        conf, acc, cnt = (np.asarray(v, dtype=float) for v in group.reliability[cell])
        ok = cnt > 0                                  # empty bins carry NaN confidence and accuracy
        if ok.any():
            out[cell] = float((cnt[ok] * np.abs(acc[ok] - conf[ok])).sum() / cnt[ok].sum())
    return out


def worst_calibrated(groups: list[Group], cells, few: int = 4) -> list[Group]:
    """The ``few`` (model, method) groups whose cells' ECE differ most (largest max − min), largest first."""
    spread = {id(g): (lambda e: max(e.values()) - min(e.values()) if len(e) > 1 else -1.0)(reliability_ece(g, cells))
              for g in groups}
    return sorted((g for g in groups if spread[id(g)] >= 0), key=lambda g: -spread[id(g)])[:few]


def reliability_attribute(settings: dict) -> str:
    """The attribute whose groups the reliability diagrams show: the first intersection, else the first."""
    return next((a for a, s in settings.items() if len(s.get("columns", ())) > 1), next(iter(settings)))


def _reliability(preds, attributes, settings: dict, bins: int = N_BINS) -> dict:
    from embedkit.attributes import parse

    out = {}
    name = reliability_attribute(settings)
    attr = next(a for a in parse(attributes) if a.name == name)
    groups = attr.labels(preds.attributes)
    conf, correct = preds.proba.max(1), (preds.proba.argmax(1) == preds.y_true())
    edges = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    for g in settings[name]["groups"]:
        m = groups == g
        cnt = np.bincount(edges[m], minlength=bins)
        with np.errstate(invalid="ignore"):
            out[g] = (np.bincount(edges[m], conf[m], bins) / cnt, np.bincount(edges[m], correct[m], bins) / cnt, cnt)
    return out


FOLD = re.compile(r"^(?P<base>.+)-fold(?P<k>\d+)$")


def _rounds(runs_dir: Path) -> dict[tuple[str, str, str], list[list[Path]]]:
    """(dataset, model, method) -> per seed, the run folders whose test predictions pool into one
    evaluation: one folder, or for cross-validation (datasets ``<base>-fold<k>``) one per fold."""
    out: dict[tuple[str, bool, str, str], dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    for (dataset, model, method), folders in find_runs(runs_dir).items():
        m = FOLD.match(dataset)
        for f in folders:
            out[(m["base"] if m else dataset, bool(m), model, method)][f.name].append(f)
    named = {}
    for (base, cv, model, method), seeds in out.items():
        k = max(len(v) for v in seeds.values())
        named[(f"{base} ({k}-fold CV, pooled)" if cv else base, model, method)] = [seeds[s] for s in sorted(seeds)]
    return named


def _test_rows(folders: list[Path]) -> list:
    """Each folder's (each fold's) test predictions, read once for pooling and for the per-fold spread."""
    return [read_predictions(f / PREDICTIONS).select("test") for f in folders]


def _pooled_test(folders: list[Path], parts: list):
    """Every fold's test rows (``parts``, one per folder) in one set: each image tested exactly once
    (out-of-fold predictions). Refuses to pool unless all K folds are present and no image is tested twice."""
    if len(parts) == 1:
        return parts[0]
    _check_folds(folders, parts)
    return concat(parts)


def _check_folds(folders: list[Path], parts) -> None:
    where = f"{folders[0].parents[2].name.rsplit('-fold', 1)[0]}-fold*/{'/'.join(folders[0].parts[-3:])}"
    seen = {int(FOLD.match(f.parts[-4])["k"]) for f in folders}
    k = max([len(seen)] + [len(set(p.attributes["fold"])) for p in parts if "fold" in p.attributes]
            + [max(seen) + 1])
    missing = sorted(set(range(k)) - seen)
    if missing:
        raise EmbedkitError(f"{where}: {len(seen)} of {k} folds finished (missing fold {', '.join(map(str, missing))}); "
                            "cross-validated results pool only when every fold has run — finish them (rerun the study) "
                            "or report the finished folds as separate datasets")
    ids = np.concatenate([p.image_id for p in parts])
    if len(set(ids.tolist())) != len(ids):
        raise EmbedkitError(f"{where}: an image is in the test split of several folds; the rounds are not one "
                            "K-fold partition (make them with `embedkit data folds`)")


def _fold_spread(parts: list, attributes) -> dict | None:
    """Per-fold point values (of the first seed's fold ``parts``): accuracy and every gap of every attribute,
    to show the spread the pooled CI leaves out (it treats the K fold models as fixed)."""
    if len(parts) < 2:
        return None
    vals = [evaluate_predictions(part, attributes=attributes, n_boot=1, n_perm=1) for part in parts]
    return {"k": len(vals), "accuracy": [v["accuracy"] for v in vals],
            "gaps": {a: {gap: [v["fairness"][a][gap] for v in vals] for gap in GAPS} for a in vals[0]["fairness"]}}


def sign_changes(folds: dict | None, attribute: str, gap: str) -> tuple[int, int] | None:
    """(folds with a positive, with a negative value) of a signed gap when both occur, else None."""
    values = [v for v in ((folds or {}).get("gaps", {}).get(attribute, {}).get(gap) or []) if v is not None]
    pos, neg = sum(v > 0 for v in values), sum(v < 0 for v in values)
    return (pos, neg) if pos and neg else None


def median(values) -> float | None:
    """The median of the defined values (None where a seed has none); None when no value is defined."""
    v = [x for x in values if x is not None]
    return float(np.median(v)) if v else None


def adjust_family(groups: list[Group], method: str) -> int:
    """Adjust every gap's p-value over the report's whole family of tests (model x method x attribute x
    gap, every dataset) into ``summary["q_value"]``; returns the family's size."""
    from embedkit.metrics.intervals import adjust

    keys = [(g, a, gap) for g in groups for a in g.summary["p_value"] for gap in GAPS
            if g.summary["p_value"][a].get(gap) is not None]
    q = adjust([g.summary["p_value"][a][gap] for g, a, gap in keys], method)
    for g in groups:
        g.summary["q_value"] = {a: {gap: None for gap in GAPS} for a in g.summary["p_value"]}
    for (g, a, gap), v in zip(keys, q):
        g.summary["q_value"][a][gap] = v
    return len(keys)


def summarise(runs_dir: Path, *, n_boot: int = N_BOOT, attributes: str | None = None,
              threads: int | None = None) -> list[Group]:
    groups = []
    for (dataset, model, method), per_seed in sorted(_rounds(runs_dir).items()):
        results, preds_all = [], []
        folders = [f for fs in per_seed for f in fs]
        fold_parts = [_test_rows(seed_folders) for seed_folders in per_seed]
        for i, (seed_folders, parts) in enumerate(zip(per_seed, fold_parts)):
            preds = _pooled_test(seed_folders, parts)
            preds_all.append(preds)
            settings = dict(attributes=attributes, split="test", n_boot=n_boot, n_perm=n_boot, seed=i,
                            return_replicates=True)
            results.append(evaluate_folder(seed_folders[0], threads=threads, **settings) if len(seed_folders) == 1 else  # cached
                           evaluate_predictions(preds, threads=threads, **settings))
        summary = aggregate_seeds(results)
        settings = results[0]["settings"]["attributes"]
        summary["attributes"] = settings
        summary["folds"] = _fold_spread(fold_parts[0], attributes)
        summary["noise_floor"] = {a: {g: float(np.mean([r["null"][a][g] or 0 for r in results])) for g in GAPS}
                                  for a in settings}
        summary["p_value"] = {a: {g: median(r["p_value"][a][g] for r in results) for g in GAPS} for a in settings}
        rel = [_reliability(p, attributes, settings) for p in preds_all]
        pooled = {}
        for g in settings[reliability_attribute(settings)]["groups"]:
            cnt = sum(r[g][2] for r in rel)
            with np.errstate(invalid="ignore"):
                pooled[g] = tuple(np.nansum([r[g][k] * r[g][2] for r in rel], 0) / cnt for k in (0, 1)) + (cnt,)
        records = [json.loads((f / RECORD).read_text()) for f in folders]
        groups.append(Group(dataset, model, method, folders, summary, pooled, records[0].get("manifest"), results,
                            sum(kept_probe(r) for r in records), [fs[0].name for fs in per_seed]))
    if len({g.dataset for g in groups}) > 1:  # several datasets in one runs folder: keep them apart
        for g in groups:
            g.model = f"{g.dataset}/{g.model}"
    return groups


def collect(runs_dir: Path, *, n_boot: int = N_BOOT, attributes: str | None = None, adjust: str,
            threads: int | None = None) -> tuple[list[Group], int]:
    """Every finished run under ``runs_dir`` summarised, with the report's family of gap tests adjusted
    (``adjust``: bh or holm); returns the groups and the family's size. What the report and the results
    table are both built from."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise EmbedkitError(f"{runs_dir}: runs folder not found")
    groups = summarise(runs_dir, n_boot=n_boot, attributes=attributes, threads=threads)
    if not groups:
        raise EmbedkitError(f"{runs_dir}: no finished runs (<dataset>/<model>/<method>/seed-<k>/run.json) found; "
                            "run `embedkit probe`, `zeroshot` or `finetune` first")
    return groups, adjust_family(groups, adjust)
