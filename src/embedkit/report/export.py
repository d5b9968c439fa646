"""Results as data for ``embedkit results`` and ``embedkit.results()``: the tidy table of a runs folder, from the
same summaries the report is built from — classes (``summary``) or findings (``findings_task``)."""

from __future__ import annotations

from pathlib import Path

from embedkit.report.results import frame, table


def of_runs(runs_dir: Path, *, n_boot: int, attributes, adjust: str, threads: int | None = None):
    """The tidy table of every finished run under ``runs_dir`` (classes or findings), as the report computes it."""
    from embedkit.report import findings_task
    from embedkit.report.summary import collect

    found = findings_task.find(Path(runs_dir))
    if found:
        groups = findings_task.summarise(found, n_boot=n_boot, attributes=attributes, threads=threads)
        findings_task.adjust_family(groups, adjust)
        return frame(findings_task.result_rows(groups))
    groups, _ = collect(Path(runs_dir), n_boot=n_boot, attributes=attributes, adjust=adjust, threads=threads)
    return table(groups)
