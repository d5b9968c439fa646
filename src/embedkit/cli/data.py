"""`embedkit data NAME`: one command per registered dataset builder (``embedkit.data.registry``), its
options derived from the builder's options dataclass; and `embedkit data folds`."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path

import typer

from embedkit.cli.console import console, errors, labelled, table
from embedkit.cli.options import manifest_option
from embedkit.data import registry

app = typer.Typer(help="Build manifests: NIH 6×200, CheXpert, MIMIC-CXR, PadChest, any CSV, the phantom; folds.",
                  no_args_is_help=True)


def _parameter(f: dataclasses.Field, kind) -> inspect.Parameter:
    """A dataclass field as a typer option: ``--field-name``, its default (none: required), help and checks."""
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        default = ...
    flag = "--" + f.name.replace("_", "-")
    opt = typer.Option(default, flag, help=f.metadata.get("help", ""), **f.metadata.get("typer", {}))
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=kind)


def command(builder: registry.Builder):
    """The CLI command of ``builder``: its own options first, then those it inherits; --out; prints the summary."""
    hints = typing.get_type_hints(builder.options)
    own = set(builder.options.__dict__.get("__annotations__", {}))
    fields = sorted(dataclasses.fields(builder.options), key=lambda f: f.name not in own)
    out = inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, annotation=Path,
                            default=typer.Option(..., file_okay=not builder.folder, dir_okay=builder.folder,
                                                 help=builder.out_help()))

    def run(**kw):
        target = kw.pop("out")
        show(builder.run(builder.options(**kw), target))

    run.__name__ = builder.name.replace("-", "_")
    run.__doc__ = builder.help
    run.__signature__ = inspect.Signature([_parameter(f, hints[f.name]) for f in fields] + [out])
    return run


def show(summary: registry.Summary) -> None:
    """Print what a build decided: warnings, notes, its tables, and the manifest written."""
    for w in summary.warnings:
        labelled(errors, "warning:", "yellow", str(w))
    for n in summary.notes:
        labelled(errors, "note:", "yellow", str(n))
    for title, header, rows in summary.tables:
        table(title, header, rows)
    for line in summary.lines:
        console.print(line, highlight=False)
    console.print(f"manifest: {summary.manifest}", highlight=False)


@app.command("folds")
def folds(
    manifest: Path = manifest_option(),
    out: Path = typer.Option(..., file_okay=False, help="Folder for fold-<i>.csv, one manifest per round."),
    k: int = typer.Option(5, min=2, help="Number of folds (rounds); each image is tested exactly once."),
    val_share: float = typer.Option(0.125, min=0.01, max=0.99, help="Validation share of the non-test folds "
                                                                      "(1/8: with k=5 each round keeps 7:1:2)."),
    seed: int = typer.Option(0, min=0, help="Seed of the fold and split assignment."),
) -> None:
    """K patient-disjoint folds stratified by class x sex x age band, one manifest per round."""
    from embedkit.data.build import split_table
    from embedkit.data.folds import make_folds

    paths = make_folds(manifest, out, k=k, seed=seed, val_share=val_share)
    for p in paths:
        table(*split_table(p))
    console.print(f"{len(paths)} rounds: {', '.join(str(p) for p in paths)}", highlight=False)


def register_builders() -> None:
    """Add (or refresh) one command per registered builder (``main`` calls it, so a builder registered
    after import is a command too)."""
    app.registered_commands[:] = [c for c in app.registered_commands if c.name == "folds"]
    for name in registry.names():
        app.command(name, help=registry.get(name).help)(command(registry.get(name)))


register_builders()
