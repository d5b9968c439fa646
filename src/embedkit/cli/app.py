"""The `embedkit` command: subcommands are registered here; every error becomes a short message
and one exit code (README: Exit codes) — 0 done, 1 internal error (the traceback goes to a log
file), 2 usage or input error, 3 locked by another process, 130 interrupted."""

from __future__ import annotations

import sys
import tempfile
import time
import traceback
from pathlib import Path

import typer
from typer.exceptions import TyperException

from embedkit.cli import audit, cache, data, evaluate, finetune, heads, models, report, study
from embedkit.cli.console import errors, labelled
from embedkit.errors import EmbedkitError, LockedError

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_LOCKED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

app = typer.Typer(help="Fairness of CLIP-like models on chest X-rays, from a feature cache.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"embedkit {version('embedkit')}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Fairness of CLIP-like models on chest X-rays, from a feature cache."""


app.add_typer(data.app, name="data")
app.command("evaluate")(evaluate.evaluate)
app.command("models")(models.models)
app.command("extract")(cache.extract)
app.add_typer(cache.app, name="cache")
app.command("zeroshot")(heads.zeroshot)
app.command("probe")(heads.probe)
app.command("report")(report.report)
app.command("results")(report.results)
app.command("finetune")(finetune.finetune)
app.command("audit")(audit.audit)
app.command("study")(study.study)


def _log_internal_error() -> Path:
    """Write the traceback of a bug to a log file; the user sees one line pointing at it."""
    path = Path(tempfile.gettempdir()) / f"embedkit-error-{time.strftime('%Y%m%d-%H%M%S')}.log"
    path.write_text(" ".join(sys.argv) + "\n\n" + traceback.format_exc())
    return path


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and turn whatever happens into a message and an exit code."""
    try:
        data.register_builders()
        rc = app(args=argv, standalone_mode=False)  # returns an exit code instead of raising SystemExit
        return rc if isinstance(rc, int) else EXIT_OK
    except LockedError as exc:
        labelled(errors, "locked:", "bold red", str(exc))
        return EXIT_LOCKED
    except EmbedkitError as exc:
        labelled(errors, "error:", "bold red", str(exc))
        return EXIT_USAGE
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        errors.print("interrupted: finished work is kept; rerun the same command to continue", highlight=False)
        return EXIT_INTERRUPTED
    except TyperException as exc:  # typer's usage errors: unknown option, bad or missing value
        exc.show() if hasattr(exc, "show") else errors.print(f"error: {exc}", highlight=False)
        return EXIT_USAGE
    except Exception as exc:  # a bug: short message, full traceback in a file
        log = _log_internal_error()
        labelled(errors, "internal error:", "bold red", f"{type(exc).__name__}: {exc}\n"
                 f"full traceback: {log} (please include it in a bug report)")
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())


def run() -> None:
    """Console-script wrapper: exit with main()'s status."""
    sys.exit(main())
