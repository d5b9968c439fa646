"""`embedkit evaluate PREDICTIONS.csv`: every metric of one run, with CIs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from embedkit.cli import options as opt
from embedkit.cli.console import console, table
from embedkit.predictions import read_predictions
from embedkit.runs import evaluate_predictions


def _fmt(value, ci=None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.3f}"
    return text + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and ci[0] is not None else "")


def _split(text: str) -> str:
    if text not in ("train", "val", "test"):
        raise typer.BadParameter(f"{text!r}: choose val or test")
    return text


def _design(d: dict, n: int) -> str:
    """One line saying what was resampled: patients (from the patient_id column) or images."""
    if d["unit"] == "patient":
        return (f"resampling unit: patient ({d['patients']} patients, {n} images; patient_id column): "
                f"cluster bootstrap and per-patient permutations, {d['interval']} intervals")
    return (f"resampling unit: image (no patient_id column: {n} images treated as independent), "
            f"{d['interval']} intervals")


def _why_not(result: dict, attr: str, gap: str) -> str:
    """Significant, or the real reason it is not: the CI includes 0, or p >= alpha (or both)."""
    from embedkit.metrics.suite import ALPHA

    if result["significant"][attr][gap]:
        return "yes"
    lo, hi = result["ci"]["fairness"][attr][gap]
    p, q = result["p_value"][attr][gap], result["q_value"][attr][gap]
    if p is None:
        return ("no (not tested: --n-perm 0)" if not result["settings"]["n_perm"] else
                "no (undefined: fewer than two groups large enough)")
    reasons = []
    if lo is None or (lo <= 0 <= hi):
        reasons.append("CI includes 0")
    if q >= ALPHA:
        reasons.append(f"q = {q:.2f} >= {ALPHA}")
    return "no (" + "; ".join(reasons or ["undefined"]) + ")"


def evaluate(
    predictions: Path = typer.Argument(..., exists=True, help="A run's predictions.csv, or its run folder."),
    split: str = typer.Option("test", callback=_split, help="Which split's rows to evaluate: val or test."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    n_boot: int = opt.n_boot_option(),
    n_perm: int = opt.n_perm_option(),
    seed: int = typer.Option(0, min=0, help="Seed of the bootstrap and permutation draws."),
    attributes: Optional[str] = opt.attributes_option(),
    threshold: str = opt.threshold_option(),
    threads: Optional[int] = opt.threads_option(),
) -> None:
    """Utility and fairness metrics with bootstrap CIs, p-values and the noise floor (classes, or findings:
    a predictions file with true_F / prob_F columns)."""
    from embedkit.metrics.ranking import check_rule

    result = evaluate_predictions(read_predictions(predictions), attributes=attributes, split=split, n_boot=n_boot,
                                  n_perm=n_perm, seed=seed, threshold=check_rule(threshold), threads=threads)
    if as_json:
        typer.echo(json.dumps(result))
        return
    if "auroc_macro" in result:
        return _findings(predictions, split, result)
    ci = result["ci"]
    console.print(_design(result["settings"]["resampling"], result["n"]), highlight=False)
    console.print(f"{predictions} ({split}, n = {result['n']}): accuracy {_fmt(result['accuracy'], ci['accuracy'])}, "
                  f"macro F1 {_fmt(result['f1_macro'], ci['f1_macro'])}, var F1 {_fmt(result['var_f1'], ci['var_f1'])}")
    table("per-class F1", ["class", "F1 [95% CI]"], [[c, _fmt(v, ci["f1"][c])] for c, v in result["f1"].items()])
    table("per group", ["attribute", "group", "n", "accuracy", "macro F1", "ECE (Eq. 4)", "ECE (15 bins)"],
          [[a, g, int(v["n"]), _fmt(v["accuracy"], ci["groups"][a][g]["accuracy"]), _fmt(v["f1_macro"], ci["groups"][a][g]["f1_macro"]),
            _fmt(v["ece"], ci["groups"][a][g]["ece"]), _fmt(v["ece_binned"], ci["groups"][a][g]["ece_binned"])]
           for a, gs in result["groups"].items() for g, v in gs.items()])
    rows = []
    for attr, gaps in result["fairness"].items():
        for k, v in gaps.items():
            sig = _why_not(result, attr, k)
            rows.append([attr, k, _fmt(v, ci["fairness"][attr][k]), _fmt(result["null"][attr][k]),
                         _fmt(result["excess"][attr][k]), _fmt(result["p_value"][attr][k]),
                         _fmt(result["q_value"][attr][k]), sig])
    signs = ", ".join(f"{a} {s['sign']}" for a, s in result["settings"]["attributes"].items())
    for w in result["warnings"]:
        console.print(f"note: {w}", highlight=False)
    table(f"fairness gaps (f1_gap: {signs}; q: p adjusted over these gaps)",
          ["attribute", "gap", "value [95% CI]", "noise floor", "excess", "p", "q", "significant"], rows)


def _findings(predictions: Path, split: str, result: dict) -> None:
    """Tables of a findings run: per finding, per group, and the gaps with floors and p-values."""
    ci = result["ci"]
    console.print(_design(result["settings"]["resampling"], result["n"]), highlight=False)
    console.print(f"{predictions} ({split}, n = {result['n']}): macro AUROC {_fmt(result['auroc_macro'], ci['auroc_macro'])}, "
                  f"underdiagnosis {_fmt(result['underdiagnosis'], ci['underdiagnosis'])} "
                  f"({result['settings']['underdiagnosis']}); thresholds chosen on validation by "
                  f"{result['settings']['threshold_rule']}", highlight=False)
    table("per finding", ["finding", "AUROC", "AUPRC", "TPR", "FPR", "ECE", "threshold"],
          [[f, *(_fmt(result[m][f], ci[m][f]) for m in ("auroc", "auprc", "tpr", "fpr", "ece")),
            f"{result['thresholds'][f]:.3f}"] for f in result["thresholds"]])
    table("per group", ["attribute", "group", "n", "underdiagnosis", *(f"AUROC {f}" for f in result["thresholds"])],
          [[a, g, int(v["n"]), _fmt(v["underdiagnosis"], ci["groups"][a][g]["underdiagnosis"]),
            *(_fmt(v["auroc"][f], ci["groups"][a][g]["auroc"][f]) for f in result["thresholds"])]
           for a, gs in result["groups"].items() for g, v in gs.items()])
    rows = []
    for attr, gaps in result.get("fairness", {}).items():
        for gap, value in gaps.items():
            for finding, v in (value.items() if isinstance(value, dict) else [("", value)]):
                pick = (lambda tree: tree[attr][gap][finding]) if finding else (lambda tree: tree[attr][gap])  # noqa: E731
                rows.append([attr, gap, finding or "all", _fmt(v, pick(ci["fairness"])), _fmt(pick(result["null"])),
                             _fmt(pick(result["p_value"])), _fmt(pick(result["q_value"])),
                             "yes" if pick(result["significant"]) else "no"])
    for key, why in result["undefined"].items():
        console.print(f"note: {key} undefined: {why}", highlight=False)
    table("fairness gaps (max - min over groups; q: p adjusted over these gaps)",
          ["attribute", "gap", "finding", "value [95% CI]", "noise floor", "p", "q", "significant"], rows)
