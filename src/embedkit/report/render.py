"""Render a report context through the templates (``templates/report.{md,html}.j2``) into its folder, each
file written whole (a partial file never sits under the final name)."""

from __future__ import annotations

from pathlib import Path


def environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("embedkit.report", "templates"), undefined=StrictUndefined,
                      autoescape=select_autoescape(["html"]), keep_trailing_newline=True)
    env.filters["cell"] = markdown_cell
    return env


def markdown_cell(value) -> str:
    """A Markdown table cell as written: a '|' in it (Δ |f1_gap|) escaped, so it does not split the row."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def write(out: Path, context: dict) -> Path:
    """``out/report.md`` and ``out/report.html`` from ``context``; returns the Markdown path."""
    env = environment()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("report.md", "report.html"):
        tmp = out / f".{name}.partial"
        tmp.write_text(env.get_template(f"{name}.j2").render(**context))
        tmp.replace(out / name)
    return out / "report.md"
