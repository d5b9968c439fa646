"""Dataset builders behind one registry: each declares its options once — a dataclass whose fields carry
type, default and help — and a ``run(options, out)`` that writes the manifest. ``embedkit data NAME`` and a
study's ``[data] kind = "NAME"`` are both derived from that declaration, so registering a builder makes it
usable from the CLI and from a study TOML with no other edit.

What a build has to say (notes, warnings, tables) comes back as a ``Summary`` of plain data: the CLI prints
it, a study logs it.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from embedkit.errors import EmbedkitError

# the builders shipped with embedkit, one module each; importing a module registers its builder
MODULES = ("embedkit.data.nih", "embedkit.data.chexpert", "embedkit.data.mimic", "embedkit.data.padchest",
           "embedkit.data.csvfile", "embedkit.data.phantom")


def option(default: Any = dataclasses.MISSING, help: str = "", **typer: Any):
    """A builder option: its default (none: required), its help text, and typer's checks (``exists``,
    ``dir_okay``, ``file_okay``, ``min``, ``max``) that the CLI applies; a list default is copied per use."""
    meta = {"help": help, "typer": typer}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Summary:
    """What a build decided, as data: notes (left-out rows), warnings, tables (title, header, rows)."""

    manifest: Path
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list]]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Builder:
    """A dataset builder: ``options`` (a dataclass) -> ``run(options, out)`` -> Summary.

    ``folder``: ``out`` is a folder the builder fills (``out/manifest.csv``), else the manifest file itself.
    ``changed(options, manifest)`` says why an existing build no longer matches its options ('' when it
    does); builders without it are built once."""

    name: str
    help: str
    options: type
    run: Callable[[Any, Path], Summary]
    folder: bool = False
    changed: Optional[Callable[[Any, Path], str]] = None

    def manifest(self, out: Path) -> Path:
        return out / "manifest.csv" if self.folder else out

    def out_help(self) -> str:
        return "Folder for manifest.csv and what the builder writes beside it." if self.folder else "Manifest CSV to write."

    def parse(self, table: dict, resolve: Callable[[Any], Optional[Path]] = None) -> Any:
        """The options a study's [data] table (or the CLI's values) sets; paths resolved by ``resolve``."""
        given = {}
        for f in dataclasses.fields(self.options):
            if f.name in table:
                value = table[f.name]
                given[f.name] = _resolved(f.type, value, resolve) if resolve else value
        missing = [f.name for f in dataclasses.fields(self.options)
                   if f.name not in given and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise EmbedkitError(f"data kind {self.name!r}: missing {', '.join(missing)}")
        return self.options(**given)


def _resolved(kind, value, resolve):
    text = str(kind)
    if "list[Path]" in text or "list[pathlib.Path]" in text:
        return [resolve(v) for v in value]
    if "Path" in text:
        return resolve(value)
    return value


_BUILDERS: dict[str, Builder] = {}


def register(builder: Builder) -> Builder:
    """Add a builder: `embedkit data NAME` and a study's [data] kind = NAME at once."""
    _BUILDERS[builder.name] = builder
    return builder


def _load() -> None:
    for module in MODULES:
        importlib.import_module(module)


def names() -> list[str]:
    _load()
    return sorted(_BUILDERS)


def get(name: str) -> Builder:
    _load()
    if name not in _BUILDERS:
        raise EmbedkitError(f"unknown dataset builder {name!r}; choose {', '.join(_BUILDERS)}")
    return _BUILDERS[name]
