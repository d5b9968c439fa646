"""The HDF5 layout of an embedding store, its key, and crash-safe writing and checked reading.

One store per encoder setting (model description with weights digest and preprocessing, dtype,
precision, layout): ``<cache-dir>/<model>-<key[:16]>.h5``, one row per image *content*, appended to
as manifests bring new images. Readable with plain h5py::

    /embeddings            (N, D) float32 (or float16), rows aligned with /image_key, fletcher32
    /image_key             (N,) str — SHA-256 of the image file's bytes (all strings: fixed-length UTF-8)
    /index/{path,size,mtime_ns,image_key}  resolved paths seen, with the file size and mtime under
                           which their bytes hashed to image_key (a lookup never rereads a file that
                           did not change; one that did is hashed again and re-encoded)
    /classes               (C,) str   — the classes the prompt sets cover
    /text/<format>/embeddings  (M, D) float32;  /text/<format>/prompts (M,) str;
    /text/<format>/class_index (M,) int64 — which class each prompt describes
    /text/<format>/local_similarity (N, M) float32, GLoRIA only — its word-region similarity of
                           every image row to every prompt (needs the images, so made at extraction)
    /bad/{path,reason}     images left out with --skip-bad
    attrs: complete, key, key_fields (JSON), layout_version, model, weights_digest, description,
           manifests (JSON: those extracted into it), versions (JSON), dtype, precision, device,
           created, normalized, vision_only, logit_scale, embed_dim, embeddings_sha256

Labels, splits and attributes are not stored: experiments join their manifest's rows to the store
by content key (``cache.join``).

A file is written under ``*.partial`` and renamed only when complete; readers refuse files that
are incomplete, carry another key, or fail their checksums.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from embedkit.errors import CacheNotFound, DamagedCache, EmbedkitError

LAYOUT_VERSION = 3  # 3: one store per encoder setting, rows keyed by image content, appended to
META_COLUMNS = ("label", "sex", "split", "patient_id")


def _put_strings(group, name: str, values) -> None:
    """Strings as fixed-length UTF-8 bytes, so the fletcher32 checksum covers them too."""
    data = np.array([str(v).encode() for v in values], dtype=bytes) if len(values) else np.zeros(0, dtype="S1")
    group.create_dataset(name, data=data, fletcher32=len(values) > 0)


def cache_key(fields: dict) -> str:
    """SHA-256 of the JSON of everything that changes the numbers."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def cache_path(cache_dir: Path, model: str, key: str) -> Path:
    return Path(cache_dir) / f"{model}-{key[:16]}.h5"


@dataclass
class TextSet:
    """Prompt embeddings of one zero-shot format; ``local`` (N, M), row-aligned with the image
    embeddings, holds a similarity that needs more than the two embeddings (GLoRIA's word-region
    branch), computed at extraction."""

    embeddings: np.ndarray
    prompts: list[str]
    class_index: np.ndarray
    local: np.ndarray | None = None


@dataclass
class Cache:
    """A cache file's contents in memory (what every experiment on cached features needs)."""

    path: Path
    embeddings: np.ndarray
    image_id: np.ndarray                # a store's rows: content keys; a joined view's: the manifest's ids
    meta: dict[str, np.ndarray]         # empty in a store; the manifest's columns in a joined view
    classes: tuple[str, ...]            # the classes the prompt sets cover (a view: the manifest's)
    text: dict[str, TextSet]
    attrs: dict
    bad: list[tuple[str, str]] = field(default_factory=list)   # (resolved image path, reason)
    index: dict[str, tuple[int, int, str]] = field(default_factory=dict)  # path -> (size, mtime_ns, key); view: {}
    manifest_digest: str | None = None  # set by cache.join: the manifest whose rows this view holds
    rows_digest: str | None = None      # set by cache.join: the content keys of those rows, in order
    store_rows: np.ndarray | None = None  # set by cache.join: each row's store row (two ids of one image: one row)

    def labels(self) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[c] for c in self.meta["label"]], dtype=np.int64)

    def split(self, name: str) -> np.ndarray:
        """Boolean mask of the rows in a split."""
        return self.meta["split"] == name


def write_cache(path: Path, *, embeddings_chunks, n: int, dim: int, image_key, index: dict[str, tuple[int, int, str]],
                classes: tuple[str, ...], text: dict[str, TextSet], attrs: dict, bad: list[tuple[str, str]],
                dtype: str = "float32", rows_per_chunk: int = 1024) -> Path:
    """Write a complete cache atomically: ``*.partial`` first, ``complete`` last, then rename.

    ``embeddings_chunks`` yields (start_row, array) pieces, so memory stays bounded.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.unlink(missing_ok=True)
    digest = hashlib.sha256()
    with h5py.File(tmp, "w") as f:
        emb = f.create_dataset("embeddings", shape=(n, dim), dtype=dtype, chunks=(max(1, min(rows_per_chunk, n)), dim),
                               fletcher32=True)
        for start, block in embeddings_chunks:
            block = np.asarray(block, dtype=dtype)
            emb[start:start + len(block)] = block
            digest.update(block.tobytes())
        _put_strings(f, "image_key", image_key)
        g = f.create_group("index")
        paths = sorted(index)
        _put_strings(g, "path", paths)
        for k, name in ((0, "size"), (1, "mtime_ns")):
            g.create_dataset(name, data=np.array([index[p][k] for p in paths], dtype=np.int64), fletcher32=bool(paths))
        _put_strings(g, "image_key", [index[p][2] for p in paths])
        _put_strings(f, "classes", classes)
        _write_text(f, text)
        b = f.create_group("bad")
        _put_strings(b, "path", [i for i, _ in bad])
        _put_strings(b, "reason", [r for _, r in bad])
        for k, v in attrs.items():
            f.attrs[k] = json.dumps(v) if isinstance(v, (dict, list)) else v
        f.attrs["embeddings_sha256"] = digest.hexdigest()
        f.attrs["layout_version"] = LAYOUT_VERSION
        f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        f.attrs["complete"] = True
    _fsync(tmp)
    os.replace(tmp, path)
    return path


def _write_text(f: h5py.File, text: dict[str, TextSet]) -> None:
    if "text" in f:
        del f["text"]
    t = f.create_group("text")
    for fmt, s in text.items():
        g = t.create_group(fmt)
        g.create_dataset("embeddings", data=np.asarray(s.embeddings, dtype=np.float32), fletcher32=True)
        _put_strings(g, "prompts", s.prompts)
        g.create_dataset("class_index", data=np.asarray(s.class_index, dtype=np.int64), fletcher32=True)
        if s.local is not None:
            g.create_dataset("local_similarity", data=np.asarray(s.local, dtype=np.float32), fletcher32=True)


def replace_text(path: Path, text: dict[str, TextSet], classes: tuple[str, ...], attrs: dict) -> None:
    """Refresh the prompt embeddings of a complete store, and the class list their class_index refers
    to, atomically (copy, edit, rename)."""
    import shutil

    tmp = path.with_name(path.name + ".partial")
    shutil.copyfile(path, tmp)
    with h5py.File(tmp, "r+") as f:
        _write_text(f, text)
        del f["classes"]
        _put_strings(f, "classes", classes)
        for k, v in attrs.items():
            f.attrs[k] = json.dumps(v) if isinstance(v, (dict, list)) else v
    _fsync(tmp)
    os.replace(tmp, path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _attrs(f: h5py.File) -> dict:
    out = {}
    for k, v in f.attrs.items():
        if isinstance(v, bytes):
            v = v.decode()
        if isinstance(v, str) and v[:1] in "{[":
            try:
                v = json.loads(v)
            except json.JSONDecodeError:
                pass
        out[k] = v.item() if isinstance(v, np.generic) else v
    return out


def _strings(ds) -> np.ndarray:
    return np.array([b.decode() for b in ds[()]], dtype=str) if len(ds) else np.array([], dtype=str)


def read_cache(path: str | Path, *, expect: dict | None = None) -> Cache:
    """Read a cache into memory, refusing incomplete, mismatched, edited or corrupted files.

    ``expect`` (key fields) must equal the stored ones; a difference names the fields. The
    embeddings are checked against their recorded SHA-256 on every read (about 1 ms per MB:
    docs/benchmarks.md), so an edited cache is never used silently.
    """
    path = Path(path)
    if not path.is_file():
        partial = path.with_name(path.name + ".partial")
        hint = " (an interrupted write left a .partial file; rerun `embedkit extract` to finish it)" if partial.exists() else ""
        raise EmbedkitError(f"{path}: cache file not found{hint}; run `embedkit extract` first")
    if not h5py.is_hdf5(path):
        raise EmbedkitError(f"{path}: not an embedkit cache (not an HDF5 file); caches are the .h5 files that "
                            "`embedkit extract` writes into --cache-dir")
    try:
        with h5py.File(path, "r") as f:
            attrs = _attrs(f)
            if not attrs.get("complete"):
                raise EmbedkitError(f"{path}: incomplete cache (never finished); rerun `embedkit extract`")
            if attrs.get("layout_version") != LAYOUT_VERSION:
                raise EmbedkitError(f"{path}: made by an older embedkit (cache layout {attrs.get('layout_version')}, "
                                    f"now {LAYOUT_VERSION}: one store per encoder, rows keyed by image content); "
                                    "delete it and run `embedkit extract` again")
            if expect is not None:
                _check_key(path, attrs, expect)
            ix = f["index"]
            cache = Cache(
                path=path, embeddings=f["embeddings"][()], image_id=_strings(f["image_key"]), meta={},
                classes=tuple(_strings(f["classes"])),
                text={fmt: TextSet(g["embeddings"][()], list(_strings(g["prompts"])), g["class_index"][()],
                                   g["local_similarity"][()] if "local_similarity" in g else None)
                      for fmt, g in f["text"].items()},
                attrs=attrs, bad=list(zip(_strings(f["bad"]["path"]), _strings(f["bad"]["reason"]))),
                index={p: (int(s), int(t), k) for p, s, t, k in zip(_strings(ix["path"]), ix["size"][()], ix["mtime_ns"][()],
                                                                   _strings(ix["image_key"]))},
            )
    except EmbedkitError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise DamagedCache(path, f"truncated or corrupted cache ({str(exc)[:160]})",
                           model=path.name.rsplit("-", 1)[0]) from None
    _check_digest(cache)
    return cache


def read_or_set_aside(path: Path, *, expect: dict | None = None) -> Cache | None:
    """The store at ``path``, or None: none yet, or a damaged one — moved aside to ``<file>.damaged`` (nothing is
    deleted) so that the extraction asking rebuilds it."""
    import warnings

    if not Path(path).is_file():
        return None
    try:
        return read_cache(path, expect=expect)
    except DamagedCache as exc:
        aside = Path(path).with_name(Path(path).name + ".damaged")
        os.replace(path, aside)
        warnings.warn(f"{path}: {exc.reason}; moved to {aside} and rebuilt", stacklevel=2)
        return None


def _check_digest(cache: Cache) -> None:
    dtype = cache.attrs.get("dtype", "float32")
    stored = cache.embeddings if cache.embeddings.dtype == dtype else cache.embeddings.astype(dtype)
    digest = hashlib.sha256(np.ascontiguousarray(stored)).hexdigest()    # hashed in place: no copy of the store
    if digest != cache.attrs.get("embeddings_sha256"):
        model = cache.attrs.get("model", "MODEL")
        raise DamagedCache(cache.path, "embeddings do not match their recorded digest (the file was edited or "
                           "damaged)", model=model)


def _check_key(path: Path, attrs: dict, expect: dict) -> None:
    stored = attrs.get("key_fields", {})
    differ = sorted(k for k in set(stored) | set(expect) if stored.get(k) != expect.get(k))
    if differ or attrs.get("key") != cache_key(expect):
        raise EmbedkitError(f"{path}: cache was made with different settings ({', '.join(differ) or 'key'} differ); "
                            "it will not be reused — extract again for these settings")


def verify_cache(path: str | Path) -> dict:
    """Read every dataset (checksums) and recompute the embeddings digest; returns the attrs."""
    cache = read_cache(path)  # checks the embeddings digest
    if cache.attrs.get("key") != cache_key(cache.attrs.get("key_fields", {})):
        raise EmbedkitError(f"{path}: stored key does not match its key fields")
    return cache.attrs | {"n": len(cache.image_id), "dim": cache.embeddings.shape[1], "text": sorted(cache.text)}


def list_caches(cache_dir: str | Path) -> list[dict]:
    """Summaries of the cache files in a folder (incomplete or unreadable ones marked)."""
    out = []
    for p in sorted(Path(cache_dir).glob("*.h5")):
        try:
            with h5py.File(p, "r") as f:
                a = _attrs(f)
                out.append({"path": p, "model": a.get("model"), "n": f["embeddings"].shape[0],
                            "dim": f["embeddings"].shape[1], "dtype": a.get("dtype"), "complete": bool(a.get("complete")),
                            "created": a.get("created"), "text": sorted(f.get("text", {})),
                            "key": a.get("key"), "manifests": a.get("manifests", []),
                            "layout_version": a.get("layout_version"),
                            "weights_digest": a.get("weights_digest"), "precision": a.get("precision")})
        except OSError:
            out.append({"path": p, "model": None, "complete": False, "error": "unreadable"})
    return out


def find_cache(model: str, cache_dir: str | Path, *, expect: dict | None = None,
               manifest_hint: str = "MANIFEST") -> Path:
    """The one complete store of ``model`` (with ``expect``: with these attrs, e.g. weights_digest,
    precision). Whether it holds a manifest's images is ``cache.join``'s question."""
    candidates = [c for c in list_caches(cache_dir) if c.get("model") == model and c["complete"]
                  and c.get("layout_version") == LAYOUT_VERSION]
    found = [c for c in candidates if all(c.get(k) == v for k, v in (expect or {}).items())]
    if not found:
        differ = tuple(sorted({k.replace("_digest", "") for c in candidates for k, v in (expect or {}).items()
                               if c.get(k) != v}))
        why = f"; the caches there differ in {', '.join(differ)}" if differ else ""
        raise CacheNotFound(f"no cache of {model} for {manifest_hint} in {cache_dir}{why}; run `embedkit extract "
                            f"--model {model} --manifest {manifest_hint} --cache-dir {cache_dir}` first", differ)
    if len(found) > 1:
        raise EmbedkitError(f"several caches of {model} for {manifest_hint} ({', '.join(c['path'].name for c in found)}); "
                            "choose one with --cache-file FILE")
    return found[0]["path"]


def cache_key_of(path: str | Path | None) -> str | None:
    """A complete cache's content key, read from its attributes alone (no embeddings loaded)."""
    if path is None:
        return None
    with h5py.File(path, "r") as f:
        return _attrs(f).get("key")


def read_index(path: str | Path) -> dict[str, tuple[int, int, str]]:
    """A store's index alone (path -> size, mtime_ns, content key), without its embeddings."""
    with h5py.File(path, "r") as f:
        if _attrs(f).get("layout_version") != LAYOUT_VERSION or "index" not in f:
            raise EmbedkitError(f"{path}: made by an older embedkit (cache layout {_attrs(f).get('layout_version')}, now "
                                f"{LAYOUT_VERSION}: one store per encoder, rows keyed by image content); delete it and "
                                "run `embedkit extract` again")
        ix = f["index"]
        return {p: (int(s), int(t), k) for p, s, t, k in zip(_strings(ix["path"]), ix["size"][()], ix["mtime_ns"][()],
                                                           _strings(ix["image_key"]))}
