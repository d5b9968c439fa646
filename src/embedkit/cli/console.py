"""Rich output helpers shared by the CLI commands (the library never imports rich)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 140)
errors = Console(stderr=True, soft_wrap=True)


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Print a simple table; cells are shown as written (data such as '[site A]' is not read as markup) and whole (a
    long path folds onto the next line instead of ending in '…')."""
    t = Table(title=title)
    for c in columns:
        t.add_column(str(c), overflow="fold")
    for r in rows:
        t.add_row(*(Text(str(v)) for v in r))
    console.print(t)
