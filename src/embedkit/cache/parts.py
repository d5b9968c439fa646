"""Crash-safe pieces of an extraction: the lock that keeps two writers of one store apart, the
finished batches saved under ``<store>.parts/`` (each renamed into place whole), and which chunks a
shard owns."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from embedkit.errors import EmbedkitError, LockedError


@contextmanager
def lock(path: Path, suffix: str = ".lock", *, quiet: bool = False, wait: bool = False) -> Iterator[bool]:
    """Exclusive lock on ``path + suffix``; a second extraction of the same key (or shard) fails
    clearly (LockedError), waits for it with ``wait``, or with ``quiet`` yields False instead. The lock
    file is removed on release (while still held); a waiter that then finds its file unlinked takes the lock
    again on a fresh file, so no empty lock file is left behind and no two processes hold one."""
    lock_file = path.with_name(path.name + suffix)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fh = open(lock_file, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            fh.close()
            if quiet:
                yield False
                return
            raise LockedError(f"{path}: another process is extracting this cache right now; "
                              "rerun with --wait to wait for it") from None
        if _same_file(fh, lock_file):
            break
        fh.close()                                   # the holder before us removed it: lock the new one
    try:
        yield True
    finally:
        lock_file.unlink(missing_ok=True)
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def _same_file(fh, path: Path) -> bool:
    try:
        return os.fstat(fh.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


class Parts:
    """Finished chunks of one cache, saved as ``.parts/chunk-<k>.npz`` (atomic rename)."""

    def __init__(self, path: Path, key: str):
        self.dir = path.with_name(path.name + ".parts")
        stamp = self.dir / "KEY"
        if self.dir.exists() and (not stamp.is_file() or stamp.read_text() != key):
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        stamp.write_text(key)

    def file(self, k: int) -> Path:
        return self.dir / f"chunk-{k:06d}.npz"

    def done(self, k: int) -> bool:
        return self.file(k).is_file()

    def save(self, k: int, emb: np.ndarray, valid: np.ndarray, errors: list[str], pairs: np.ndarray | None = None) -> None:
        tmp = self.dir / f".chunk-{k:06d}.tmp.npz"
        extra = {} if pairs is None else {"pairs": pairs}
        np.savez(tmp, embeddings=emb, valid=valid, errors=np.asarray(errors, dtype=str), **extra)
        os.replace(tmp, self.file(k))

    def load(self, k: int):
        with np.load(self.file(k)) as z:
            return z["embeddings"], z["valid"], list(z["errors"])

    def load_pairs(self, k: int) -> np.ndarray | None:
        with np.load(self.file(k)) as z:
            return z["pairs"] if "pairs" in z else None

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def shard_chunks(n_chunks: int, shard: tuple[int, int] | None) -> range:
    """The contiguous block of chunks shard i of n owns (sizes differ by at most one chunk)."""
    if shard is None:
        return range(n_chunks)
    i, n = shard
    return range(i * n_chunks // n, (i + 1) * n_chunks // n)


def chunks(n: int, rows: int) -> list[range]:
    return [range(s, min(s + rows, n)) for s in range(0, n, rows)]


def resolve_shard(shard: tuple[int, int] | None) -> tuple[int, int] | None:
    """``--shard i/n``, or torchrun's RANK/WORLD_SIZE, or None for a single process."""
    if shard is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        shard = (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
    if shard is not None and not 0 <= shard[0] < shard[1]:
        raise EmbedkitError(f"--shard {shard[0]}/{shard[1]}: need 0 <= i < n")
    return shard
