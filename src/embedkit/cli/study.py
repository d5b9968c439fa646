"""`embedkit study --config study.toml [--dry-run]`: the whole study, resumable."""

from __future__ import annotations

from pathlib import Path

import typer

from embedkit.cli.console import console, labelled, table


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds > 3600 else f"{seconds / 60:.1f} min" if seconds > 60 else f"{seconds:.0f} s"


def study(
    config: Path = typer.Option(..., exists=True, dir_okay=False, help="Study TOML (studies/demo.toml, studies/paper.toml)."),
    dry_run: bool = typer.Option(False, help="Print the plan: what will run, what is done, rough time."),
    set_: list[str] = typer.Option([], "--set", help="Override a setting: dotted.key=value (repeatable)."),
) -> None:
    """Run the study: data, extraction, zero-shot/probes, fine-tuning, report — skipping finished work."""
    from rich.live import Live
    from rich.table import Table

    from embedkit.study import load_study, plan, run_study

    s = load_study(config, set_)
    if dry_run:
        steps = plan(s)
        table(f"plan for {config}", ["stage", "step", "status", "why", "rough time"],
              [[p.stage, p.name, p.status, p.reason, "—" if p.done else _duration(p.estimate_s)] for p in steps])
        todo = sum(p.estimate_s for p in steps if not p.done)
        console.print(f"{sum(not p.done for p in steps)} step(s) to run, roughly {_duration(todo)} (CPU estimates; "
                      "a GPU is much faster)")
        return
    s.check_declared()
    rows: list[list[str]] = []

    def view() -> Table:
        t = Table(title=f"study {config}")
        for c in ("stage", "step", "status", "time"):
            t.add_column(c)
        for r in rows if not console.is_terminal else rows[-25:]:   # redirected: the whole table, once
            t.add_row(*r)
        return t

    with Live(view(), console=console, refresh_per_second=4, transient=False) as live:
        def on_step(step, status):
            row = [step.stage, step.name, status, f"{step.seconds:.1f} s" if status in ("finished", "failed") else ""]
            if status in ("finished", "failed") and rows and rows[-1][:2] == row[:2]:
                rows[-1] = row
            else:
                rows.append(row)
            live.update(view())

        steps = run_study(s, on_step=on_step)
    failed = [p for p in steps if p.error]
    report = s.paths["report_dir"] / "report.html"
    for p in failed:
        labelled(console, "failed", "red", f"{p.stage} {p.name}: {p.error}")
    console.print(f"log: {s.paths['runs_dir'] / 'study.log'}", highlight=False)
    if report.is_file():
        console.print(f"report: {report} (and report.md beside it)", highlight=False)
    if failed:
        raise typer.Exit(1)
