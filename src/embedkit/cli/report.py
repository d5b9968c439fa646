"""`embedkit report`: the study report from every run found."""

from __future__ import annotations

from pathlib import Path

import typer

from embedkit.cli import options as opt
from embedkit.cli.console import console


def _adjust(text: str) -> str:
    from embedkit.metrics.intervals import ADJUSTMENTS

    if text not in ADJUSTMENTS:
        raise typer.BadParameter(f"{text!r}: choose {' or '.join(ADJUSTMENTS)}")
    return text


def report(
    runs_dir: Path = opt.runs_dir_option(must_exist=True),
    out: Path = typer.Option(Path("reports"), file_okay=False, help="Where report.md, report.html and figures/ go."),
    n_boot: int = opt.n_boot_option(), attributes: str = opt.attributes_option(),
    adjust: str = typer.Option("bh", callback=_adjust,
                               help="Multiple-testing adjustment over the report's gaps: bh (false discovery rate) or holm."),
) -> None:
    """Tables and figures of the paper, with CIs and seed spread, as Markdown and self-contained HTML."""
    from embedkit.report import build_report

    path = build_report(runs_dir, out, n_boot=n_boot, attributes=attributes, adjust=adjust)
    console.print(f"report: {path} and {path.with_suffix('.html')}", highlight=False)
