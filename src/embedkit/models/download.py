"""Fetching published weights for users who are online (never used when a local path is given)."""

from __future__ import annotations

import os
import shutil
import urllib.request
import zipfile
from pathlib import Path

from embedkit.errors import EmbedkitError

CACHE = Path(os.environ.get("EMBEDKIT_WEIGHTS_CACHE", Path.home() / ".cache" / "embedkit"))


def offline() -> bool:
    """True when the user (or the test suite) asked for no network: EMBEDKIT_OFFLINE or HF_HUB_OFFLINE."""
    return any(os.environ.get(v, "") not in ("", "0") for v in ("EMBEDKIT_OFFLINE", "HF_HUB_OFFLINE"))


def hub_snapshot(repo_id: str, how_to: str) -> Path:
    """A local copy of a Hugging Face repo (downloaded once into the hub cache)."""
    if offline():
        raise EmbedkitError(how_to)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id))
    except Exception as exc:
        raise EmbedkitError(f"{how_to} (download failed: {str(exc).splitlines()[0][:120]})") from None


def unzipped(url: str, name: str, how_to: str) -> Path:
    """The folder of a zip archive from ``url``, downloaded and extracted once under the cache."""
    target = CACHE / name
    if target.is_dir() and any(target.rglob("pytorch_model.bin")):
        return next(target.rglob("pytorch_model.bin")).parent
    if offline():
        raise EmbedkitError(how_to)
    tmp = CACHE / f"{name}.zip.partial"
    try:
        CACHE.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=30) as r, open(tmp, "wb") as fh:
            shutil.copyfileobj(r, fh)
        with zipfile.ZipFile(tmp) as z:
            z.extractall(target)
    except Exception as exc:
        raise EmbedkitError(f"{how_to} (download failed: {str(exc).splitlines()[0][:120]})") from None
    finally:
        tmp.unlink(missing_ok=True)
    found = list(target.rglob("pytorch_model.bin"))
    if not found:
        raise EmbedkitError(f"{url}: the archive holds no pytorch_model.bin; {how_to}")
    return found[0].parent
