"""The report's tables: (title, header, rows), one per paper table and per attribute's gaps."""

from __future__ import annotations

from embedkit.metrics.suite import significant
from embedkit.metrics.suite import MIN_GROUP
from embedkit.report.summary import Group

METHODS = ("zeroshot", "linear", "mlp", "knn", "lora", "full")
MODELS = ("clip", "biomedclip", "medclip-vit", "medclip-rn50", "gloria", "vit-imagenet")
# The paper fine-tuned an ImageNet ViT-B/16 in place of the whole CLIP image tower (hardware limits).
LABELS = {"vit-imagenet": "vit-imagenet (the paper's CLIP full fine-tuning row)"}
GAPS = ("f1_gap", "eqodds", "ece_gap", "ece_binned_gap")


def _fmt(entry: dict | None, digits: int = 3) -> str:
    if not entry or entry.get("mean") is None:
        return "—"
    mean = entry["mean"]
    text = f"{mean:.{digits}f}"
    if entry.get("sd") is not None:
        text += f" ± {entry['sd']:.{digits}f}"
    lo, hi = entry.get("ci", [None, None])
    if lo is not None:
        text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return text


def lookup(tree: dict, path: str):
    for part in path.split("/"):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def ordered_models(by: dict) -> list[str]:
    """Models found, the paper's five first in their order, then any others (tiny variants) sorted."""
    return [m for m in MODELS if any(k[0] == m for k in by)] + sorted({k[0] for k in by} - set(MODELS))


def ordered_methods(groups: list[Group]) -> list[str]:
    """Methods found, the paper's first in their order, then any others (interventions, new heads) sorted."""
    found = {g.method for g in groups}
    return [m for m in METHODS if m in found] + sorted(found - set(METHODS))


def declared(groups: list[Group]) -> dict[str, dict]:
    """Every declared attribute across the runs, in declaration order, with its groups (union)."""
    out: dict[str, dict] = {}
    for g in groups:
        for a, s in g.attributes.items():
            entry = out.setdefault(a, dict(s, groups=list(s["groups"]), too_small=list(s["too_small"])))
            entry["groups"] += [x for x in s["groups"] if x not in entry["groups"]]
            entry["too_small"] += [x for x in s["too_small"] if x not in entry["too_small"]]
    return out


def tables(groups: list[Group]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for every table of the report."""
    by = {(g.model, g.method): g for g in groups}
    models = ordered_models(by)
    methods = ordered_methods(groups)
    out = []
    out.append(("Accuracy (test; mean ± sd over seeds [95% CI pooling seeds and bootstrap])", ["model", *methods],
                [[LABELS.get(m, m), *(_fmt(lookup(by[(m, k)].summary, "accuracy")) if (m, k) in by else "—" for k in methods)] for m in models]))
    out.append(("Macro F1", ["model", *methods],
                [[LABELS.get(m, m), *(_fmt(lookup(by[(m, k)].summary, "f1_macro")) if (m, k) in by else "—" for k in methods)] for m in models]))
    out.append(("Variance of per-class F1", ["model", *methods],
                [[LABELS.get(m, m), *(_fmt(lookup(by[(m, k)].summary, "var_f1"), 4) if (m, k) in by else "—" for k in methods)] for m in models]))
    classes = sorted({c for g in groups for c in (g.summary.get("f1") or {})})
    out.append(("Per-class F1", ["model", "method", *classes],
                [[g.model, g.method, *(_fmt(lookup(g.summary, f"f1/{c}"), 2) for c in classes)] for g in groups]))
    attributes = declared(groups)
    group_cols = [(a, g) for a, s in attributes.items() for g in s["groups"]]
    out.append(("Per-group macro F1", ["model", "method", *(f"{a} {g}" for a, g in group_cols)],
                [[g.model, g.method, *(_fmt(lookup(g.summary, f"groups/{a}/{v}/f1_macro"), 2) for a, v in group_cols)]
                 for g in groups]))
    for attr, settings in attributes.items():
        first, *rest = settings["groups"] + [""]
        sign = (f"positive: {first} better" if settings["sign"] != "max - min" else "max − min over groups")
        small = f"; left out as under {MIN_GROUP} test images: {', '.join(settings['too_small'])}" if settings["too_small"] else ""
        rows = []
        for g in groups:
            cells = []
            for gap in GAPS:
                entry = lookup(g.summary, f"fairness/{attr}/{gap}")
                ci = (entry or {}).get("ci") or [None, None]
                star = " *" if significant(ci, g.summary["p_value"].get(attr, {}).get(gap)) else ""
                cells.append(_fmt(entry) + star)
                cells.append(f"{g.summary['noise_floor'].get(attr, {}).get(gap, float('nan')):.3f}")
            rows.append([g.model, g.method, *cells])
        out.append((f"Fairness gaps, {attr} (f1_gap {sign}{small}; * = CI excludes 0 and median permutation p < 0.05; "
                    "floor = median |gap| under the permutation null)",
                    ["model", "method", *(h for gap in GAPS for h in (gap, f"{gap} floor"))], rows))
    cv = [g for g in groups if g.summary.get("folds")]
    if cv:
        out.append(("Cross-validation: per-fold spread (first seed; pooled values above)",
                    ["model", "method", "folds", "accuracy per fold", "f1_gap per fold", "sd of f1_gap"],
                    [[g.model, g.method, str(g.summary["folds"]["k"]),
                      ", ".join(f"{v:.3f}" for v in g.summary["folds"]["accuracy"]),
                      f"{g.summary['folds']['attribute']}: "
                      + ", ".join("—" if v is None else f"{v:+.3f}" for v in g.summary["folds"]["f1_gap"]),
                      _sd(g.summary["folds"]["f1_gap"])] for g in cv]))
    return out




def _sd(values) -> str:
    import numpy as np

    v = np.array([x for x in values if x is not None], dtype=float)
    return f"{v.std(ddof=1):.3f}" if len(v) > 1 else "—"
