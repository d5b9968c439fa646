"""The `embedkit` command: subcommands are registered here, errors become one clear line."""

from __future__ import annotations

import sys

import typer

from embedkit.cli import cache, data, evaluate, finetune, heads, models, report, study
from embedkit.cli.console import errors
from embedkit.errors import EmbedkitError

app = typer.Typer(help="Fairness of CLIP-like models on chest X-rays, from a feature cache.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
app.add_typer(data.app, name="data")
app.command("evaluate")(evaluate.evaluate)
app.command("models")(models.models)
app.command("extract")(cache.extract)
app.add_typer(cache.app, name="cache")
app.command("zeroshot")(heads.zeroshot)
app.command("probe")(heads.probe)
app.command("report")(report.report)
app.command("finetune")(finetune.finetune)
app.command("study")(study.study)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app; bad input prints a message and exits 2, never a traceback."""
    try:
        rc = app(args=argv, standalone_mode=False)  # click returns a typer.Exit code instead of raising
        if isinstance(rc, int):
            return rc
    except EmbedkitError as exc:
        errors.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        return 1
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())


def run() -> None:
    """Console-script wrapper: exit with main()'s status."""
    sys.exit(main())
