"""`embedkit report`: the study report from every run found."""

from __future__ import annotations

from pathlib import Path

import typer

from embedkit.cli.console import console


def report(
    runs: Path = typer.Option(Path("runs"), help="Runs folder to scan."),
    out: Path = typer.Option(Path("reports"), help="Where report.md, report.html and figures/ go."),
    n_boot: int = typer.Option(1000, help="Bootstrap resamples per run."),
) -> None:
    """Tables and figures of the paper, with CIs and seed spread, as Markdown and self-contained HTML."""
    from embedkit.report import build_report

    path = build_report(runs, out, n_boot=n_boot)
    console.print(f"report: {path} and {path.with_suffix('.html')}", highlight=False)
