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


def fmt(entry: dict | None, digits: int = 3) -> str:
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
    note = " (‡ = a fine-tuning cell whose runs kept their starting linear probe: epoch 0 selected)" if any(
        g.kept_probe for g in groups) else ""
    folds = FOLDS_NOTE if any(g.summary.get("folds") for g in groups) else ""
    for title, path, digits in (("Accuracy (test; mean ± sd over seeds [95% CI pooling seeds and bootstrap])", "accuracy", 3),
                                ("Macro F1", "f1_macro", 3), ("Variance of per-class F1", "var_f1", 4)):
        out.append((title + note + (folds if path == "accuracy" else ""), ["model", *methods],
                    [[LABELS.get(m, m), *(_cell(by.get((m, k)), path, digits) for k in methods)] for m in models]))
    classes = sorted({c for g in groups for c in (g.summary.get("f1") or {})})
    out.append(("Per-class F1", ["model", "method", *classes],
                [[g.model, g.label, *(fmt(lookup(g.summary, f"f1/{c}"), 2) for c in classes)] for g in groups]))
    attributes = declared(groups)
    group_cols = [(a, g) for a, s in attributes.items() for g in s["groups"]]
    out.append(("Per-group macro F1", ["model", "method", *(f"{a} {g}" for a, g in group_cols)],
                [[g.model, g.label, *(fmt(lookup(g.summary, f"groups/{a}/{v}/f1_macro"), 2) for a, v in group_cols)]
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
                p, q = g.summary["p_value"].get(attr, {}).get(gap), g.summary.get("q_value", {}).get(attr, {}).get(gap)
                star = " *" if significant(ci, q) else ""
                floor = g.summary["noise_floor"].get(attr, {}).get(gap, float("nan"))
                cells += [fmt(entry) + star + _fold_sd(g, attr, gap), f"{floor:.3f}", _p(p), _p(q)]
            rows.append([LABELS.get(g.model, g.model), g.label, *cells])
        out.append((f"Fairness gaps, {attr} (f1_gap {sign}{small}; * = CI excludes 0 and q < 0.05 over the report's "
                    "family; p = median permutation p over seeds, q = p adjusted over the family; "
                    f"floor = median |gap| under the permutation null{folds})",
                    ["model", "method", *(h for gap in GAPS for h in (gap, "floor", "p", "q"))], rows))
    out += _ece_table(groups)
    cv = [g for g in groups if g.summary.get("folds")]
    if cv:
        out.append(("Cross-validation: per-fold spread (first seed). The pooled CIs above resample the pooled test images "
                    "and treat the K fold models as fixed; this spread is the variation from refitting them",
                    ["model", "method", "folds", "accuracy per fold", *(f"{a} f1_gap per fold" for a in attributes),
                     *(f"sd of {a} f1_gap" for a in attributes)],
                    [[g.model, g.label, str(g.summary["folds"]["k"]),
                      ", ".join(f"{v:.3f}" for v in g.summary["folds"]["accuracy"]),
                      *(", ".join("—" if v is None else f"{v:+.3f}" for v in _per_fold(g, a)) for a in attributes),
                      *(_sd(_per_fold(g, a)) for a in attributes)] for g in cv]))
    return out




def _cell(g: Group | None, path: str, digits: int) -> str:
    if g is None:
        return "—"
    mark = "" if not g.kept_probe else " ‡" if g.kept_probe == len(g.runs) else f" ‡{g.kept_probe}/{len(g.runs)}"
    return fmt(lookup(g.summary, path), digits) + mark + (_fold_sd(g) if path == "accuracy" else "")


FOLDS_NOTE = "; folds sd = the spread of the K fold models' own values (first seed): the variation from refitting them"


def _fold_sd(g: Group, attr: str | None = None, gap: str | None = None) -> str:
    """' (folds sd x)' beside a cross-validated figure (accuracy, or a gap of ``attr``), else ''."""
    folds = g.summary.get("folds")
    if not folds:
        return ""
    sd = _sd(folds["accuracy"] if attr is None else folds["gaps"].get(attr, {}).get(gap) or [])
    return "" if sd == "—" else f" (folds sd {sd})"


def _per_fold(g: Group, attr: str) -> list:
    return g.summary["folds"]["gaps"].get(attr, {}).get("f1_gap") or []


def _p(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def _sd(values) -> str:
    import numpy as np

    v = np.array([x for x in values if x is not None], dtype=float)
    return f"{v.std(ddof=1):.3f}" if len(v) > 1 else "—"


def _ece_table(groups: list[Group]) -> list:
    """ECE per group of the reliability attribute for every model and method (the figure draws the worst few)."""
    from embedkit.report.summary import reliability_attribute, reliability_ece

    attributes = declared(groups)
    if not attributes:
        return []
    cross = reliability_attribute(attributes)
    cells = attributes[cross]["groups"]
    rows = [[g.model, g.label, *(f"{e[c]:.3f}" if c in e else "—" for c in cells),
             f"{max(e.values()) - min(e.values()):.3f}" if len(e) > 1 else "—"]
            for g in groups for e in [reliability_ece(g, cells)] if e]
    return [(f"ECE per group of {cross} (15 bins, from the reliability diagrams; the figure draws the four pairs with "
             "the largest spread)", ["model", "method", *cells, "max − min"], rows)] if rows else []
