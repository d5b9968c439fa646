"""Reading a source's metadata table (CSV, gzipped CSV, or an Excel sheet) with checked columns:
a missing file, a wrong format or a missing column is one message naming the file and what to give."""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path
from typing import Iterator

from embedkit.errors import EmbedkitError


def open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def read_table(path: str | Path, required: tuple[str, ...], what: str) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) for every row; ``required`` columns must be in the header."""
    path = Path(path)
    if not path.is_file():
        raise EmbedkitError(f"{path}: not found; give {what}")
    if path.suffix == ".xlsx":
        header, rows = _xlsx(path)
    else:
        try:
            with open_text(path) as fh:
                reader = csv.reader(fh)
                header = next(reader, [])
                rows = list(reader)
        except (UnicodeDecodeError, csv.Error, OSError, EOFError) as exc:
            raise EmbedkitError(f"{path}: not a CSV text file ({type(exc).__name__}); give {what}") from None
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise EmbedkitError(f"{path}: missing column(s) {', '.join(missing)}; give {what}")
    out = []
    for line, values in enumerate(rows, start=2):
        if not any(v.strip() for v in values):
            continue
        if len(values) < len(header):
            values = values + [""] * (len(header) - len(values))
        out.append((line, {h: v.strip() for h, v in zip(header, values)}))
    return out


def _xlsx(path: Path) -> tuple[list[str], list[list[str]]]:
    """The first sheet of an Excel file as text cells (CheXpert's demographics ship as .xlsx)."""
    try:
        import openpyxl
    except ImportError:
        raise EmbedkitError(f"{path}: reading .xlsx needs openpyxl (pip install openpyxl), or save the sheet as CSV") from None
    try:
        sheet = openpyxl.load_workbook(path, read_only=True, data_only=True).worksheets[0]
    except Exception as exc:  # openpyxl raises several kinds for a file that is not a workbook
        raise EmbedkitError(f"{path}: not an Excel workbook ({type(exc).__name__})") from None
    cells = [["" if v is None else (str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)) for v in row]
             for row in sheet.iter_rows(values_only=True)]
    return (cells[0], cells[1:]) if cells else ([], [])
