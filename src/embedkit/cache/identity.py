"""Which stored row is which image: content keys (SHA-256 of the file's bytes), looked up through the
store's index of (path, size, mtime) so that an unchanged file is never read again, while a file whose
bytes changed gets a new key and is re-encoded, never silently reused."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from embedkit.manifest import Manifest


@dataclass(frozen=True)
class RowKey:
    path: str            # resolved
    size: int
    mtime_ns: int
    key: str | None      # None: the file is missing (extraction reports it as a bad image)


def content_key(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def row_keys(manifest: Manifest, index: dict[str, tuple[int, int, str]]) -> list[RowKey]:
    """The content key of every manifest row, reusing ``index`` where size and mtime still match.

    Paths resolve as ``Path.resolve`` would, at one system call per row: each folder is resolved once, and
    a file that is itself a symbolic link is followed (docs/benchmarks.md, "A whole dataset")."""
    folders: dict[str, str] = {}
    base = str(manifest.path.parent)
    out = []
    for path in manifest.table["path"].tolist():
        folder, name = os.path.split(os.path.join(base, path))
        real = folders.get(folder)
        if real is None:
            real = folders[folder] = os.path.realpath(folder)
        p = os.path.join(real, name)
        try:
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                p = os.path.realpath(p)
                st = os.stat(p)
        except OSError:
            out.append(RowKey(p, -1, -1, None))
            continue
        known = index.get(p)
        key = known[2] if known and known[:2] == (st.st_size, st.st_mtime_ns) else content_key(Path(p))
        out.append(RowKey(p, st.st_size, st.st_mtime_ns, key))
    return out
