"""Rich output helpers shared by the CLI commands (the library never imports rich)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

# Neither console reads markup: what is printed (paths, messages, a group named '[site A]') shows as written; a
# styled label goes through ``labelled``.
console = Console(soft_wrap=True, markup=False, width=None if sys.stdout.isatty() else 140)
errors = Console(stderr=True, soft_wrap=True, markup=False)


def labelled(out: Console, label: str, style: str, text: str) -> None:
    """``label`` in ``style`` ('bold red'), then ``text`` as written."""
    out.print(Text.assemble((label, style), " ", text), highlight=False)


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Print a simple table; cells are shown whole (a long path folds onto the next line instead of ending in '…')."""
    t = Table(title=title)
    for c in columns:
        t.add_column(str(c), overflow="fold")
    for r in rows:
        t.add_row(*(str(v) for v in r))
    console.print(t)
