"""`embedkit evaluate PREDICTIONS.csv`: every metric of one run, with CIs."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from embedkit.cli.console import console, table
from embedkit.runs import evaluate_predictions, read_predictions


def _fmt(value, ci=None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.3f}"
    return text + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and ci[0] is not None else "")


def evaluate(
    predictions: Path = typer.Argument(..., help="A run's predictions.csv."),
    split: str = typer.Option("test", help="Which split's rows to evaluate."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    n_boot: int = typer.Option(1000, help="Bootstrap resamples."),
    n_perm: int = typer.Option(1000, help="Permutations for p-values and the noise floor."),
    seed: int = typer.Option(0),
) -> None:
    """Utility and fairness metrics with bootstrap CIs, p-values and the noise floor."""
    result = evaluate_predictions(read_predictions(predictions), split=split, n_boot=n_boot, n_perm=n_perm, seed=seed)
    if as_json:
        typer.echo(json.dumps(result))
        return
    ci = result["ci"]
    console.print(f"{predictions} ({split}, n = {result['n']}): accuracy {_fmt(result['accuracy'], ci['accuracy'])}, "
                  f"macro F1 {_fmt(result['f1_macro'], ci['f1_macro'])}, var F1 {_fmt(result['var_f1'], ci['var_f1'])}")
    table("per-class F1", ["class", "F1 [95% CI]"], [[c, _fmt(v, ci["f1"][c])] for c, v in result["f1"].items()])
    table("per group", ["attribute", "group", "n", "accuracy", "macro F1", "ECE"],
          [[a, g, v["n"], _fmt(v["accuracy"], ci["groups"][a][g]["accuracy"]), _fmt(v["f1_macro"], ci["groups"][a][g]["f1_macro"]),
            _fmt(v["ece"], ci["groups"][a][g]["ece"])] for a, gs in result["groups"].items() for g, v in gs.items()])
    rows = []
    for attr, gaps in result["fairness"].items():
        for k, v in gaps.items():
            sig = "yes" if result["significant"][attr][k] else "no (CI includes 0)"
            rows.append([attr, k, _fmt(v, ci["fairness"][attr][k]), _fmt(result["null"][attr][k]),
                         _fmt(result["excess"][attr][k]), f"{result['p_value'][attr][k]:.3f}", sig])
    table("fairness gaps (f1_gap signed: sex M−F, age young−old)",
          ["attribute", "gap", "value [95% CI]", "noise floor", "excess", "p", "significant"], rows)
