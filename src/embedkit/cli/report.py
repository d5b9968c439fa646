"""`embedkit report`: the study report from every run found."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from embedkit.cli import options as opt
from embedkit.cli.console import console
from embedkit.report.results import FORMATS
from embedkit.spec import WHERE


def report(
    runs_dir: Path = opt.runs_dir_option(must_exist=True),
    out: Path = typer.Option(WHERE.report_dir, file_okay=False, help="Where report.md, report.html and figures/ go."),
    n_boot: int = opt.n_boot_option(), attributes: Optional[str] = opt.attributes_option(),
    adjust: str = opt.adjust_option(), threads: Optional[int] = opt.threads_option(),
) -> None:
    """Tables and figures of the paper, with CIs and seed spread, as Markdown and self-contained HTML."""
    from embedkit.report import build_report

    path = build_report(runs_dir, out, n_boot=n_boot, attributes=attributes, adjust=adjust, threads=threads)
    console.print(f"report: {path} and {path.with_suffix('.html')}", highlight=False)


def results(
    runs_dir: Path = opt.runs_dir_option(must_exist=True),
    fmt: Optional[str] = typer.Option(None, "--format", callback=opt.one_of("--format", FORMATS),
                                      help="csv, parquet or json (records); default: --out's suffix, else csv."),
    out: Optional[Path] = typer.Option(None, dir_okay=False, help="File to write (default: CSV or JSON on stdout)."),
    n_boot: int = opt.n_boot_option(), attributes: Optional[str] = opt.attributes_option(),
    adjust: str = opt.adjust_option(), threads: Optional[int] = opt.threads_option(),
) -> None:
    """Every number of every run as one tidy table: dataset, model, method, seed, attribute, group, metric,
    value, CI, p, q, noise floor, n (docs/api.md lists the columns)."""
    from embedkit.report import results as res
    from embedkit.report.export import of_runs

    fmt = res.format_of(out, fmt)                       # before the work: a wrong name is refused at once
    frame = of_runs(runs_dir, n_boot=n_boot, attributes=attributes, adjust=adjust, threads=threads)
    if out is None:
        typer.echo(frame.to_csv(index=False) if fmt == "csv" else frame.to_json(orient="records", indent=1), nl=False)
        return
    console.print(f"results: {res.write(frame, out, fmt)} ({len(frame)} rows)", highlight=False)
