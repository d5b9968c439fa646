"""`embedkit extract`: run each frozen encoder once over a manifest and fill its cache file.

Images are decoded once per row (in DataLoader workers) and handed to every requested model's
own preprocessing. Rows are processed in fixed chunks (one batch each by default); each finished
chunk is saved atomically under ``<cache>.parts/``, so a run killed at any moment loses at most the
batch in flight, and the chunk boundaries (hence the batches, hence the numbers) never change.
The HDF5 file is assembled and renamed into place only at the end.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from embedkit.cache.layout import LAYOUT_VERSION, TextSet, cache_key, cache_path, read_cache, replace_text, write_cache
from embedkit.devices import resolve_device
from embedkit.errors import EmbedkitError, LockedError
from embedkit.manifest import Manifest, read_manifest
from embedkit.models import Encoder, load_encoder
from embedkit.prompts import FORMATS, prompt_set

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class ExtractConfig:
    """Everything ``extract`` needs; the CLI fills it from options."""

    manifest: Path
    models: tuple[str, ...]
    cache_dir: Path = Path("cache")
    weights: dict[str, Path] = field(default_factory=dict)
    tokenizers: dict[str, Path] = field(default_factory=dict)
    batch_size: int = 64
    workers: int | None = None                # None: auto_workers(device)
    dtype: str = "float32"
    precision: str = "fp32"
    device: str = "auto"
    skip_bad: bool = False
    text_only: bool = False
    rows_per_chunk: int | None = None         # rows saved together for resume; None: one batch, so a
                                              # kill loses at most the batch in flight
    seed: int = 0
    shard: tuple[int, int] | None = None      # (i, n); None: from torchrun's RANK/WORLD_SIZE, else unsharded
    wait: bool = False                        # another process holds the lock: wait (True) or refuse

    @property
    def chunk_rows(self) -> int:
        return self.rows_per_chunk or self.batch_size


@dataclass
class ExtractResult:
    model: str
    path: Path
    n: int
    dim: int
    seconds: float
    reused: bool
    bad: list[tuple[str, str]]
    joined: bool = True                       # False: this shard is done, another shard will assemble the file

    @property
    def images_per_s(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else float("inf")


def auto_workers(device: torch.device) -> int:
    """Decode workers: several beside a GPU; none on CPU, where a worker process competes with the
    forward for the cores (measured on 2 cores, MedCLIP-RN50: 0.90 of the bare forward with one worker,
    0.98 decoding inline; docs/benchmarks.md)."""
    return min(8, max((os.cpu_count() or 1) - 1, 0)) if device.type == "cuda" else 0


def key_fields(encoder: Encoder, manifest: Manifest, *, dtype: str, precision: str) -> dict:
    """Everything that changes the numbers of a cache (its content key is their hash)."""
    ident = hashlib.sha256()
    for row in manifest.rows:
        p = manifest.image_path(row)
        size = p.stat().st_size if p.is_file() else -1
        ident.update(f"{row['image_id']}\x1f{row['path']}\x1f{size}\x1e".encode())
    return {"layout": LAYOUT_VERSION, "model": encoder.describe(), "manifest": manifest.digest(),
            "images": ident.hexdigest(), "dtype": dtype, "precision": precision}


class _Rows(torch.utils.data.Dataset):
    """Decode a row's image once and apply every model's preprocessing; errors are returned, not raised."""

    def __init__(self, paths: list[Path], preprocess: list[Callable]):
        self.paths, self.preprocess = paths, preprocess
        blank = Image.new("L", (8, 8))
        self.shapes = [p(blank).shape for p in preprocess]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from embedkit.models.images import decode

        try:
            img = decode(self.paths[i])
            return i, [p(img) for p in self.preprocess], ""
        except EmbedkitError as exc:
            return i, [torch.zeros(s) for s in self.shapes], str(exc)


def _collate(items):
    rows = [i for i, _, _ in items]
    tensors = [torch.stack([t[m] for _, t, _ in items]) for m in range(len(items[0][1]))]
    return rows, tensors, [e for _, _, e in items]


@contextmanager
def _lock(path: Path, suffix: str = ".lock", *, quiet: bool = False, wait: bool = False) -> Iterator[bool]:
    """Exclusive lock on ``path + suffix``; a second extraction of the same key (or shard) fails
    clearly (LockedError), waits for it with ``wait``, or with ``quiet`` yields False instead."""
    lock = path.with_name(path.name + suffix)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fh = open(lock, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        fh.close()
        if quiet:
            yield False
            return
        raise LockedError(f"{path}: another process is extracting this cache right now; "
                          "rerun with --wait to wait for it") from None
    try:
        yield True
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


class _Parts:
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


@dataclass
class _Job:
    name: str
    encoder: Encoder
    fields: dict
    path: Path
    parts: _Parts | None = None
    buffers: dict = field(default_factory=dict)
    pair_texts: list[str] = field(default_factory=list)   # prompts of the pair similarity, deduplicated
    pair_prepared: object = None


def _prepare_pairs(job: _Job, classes: tuple[str, ...]) -> None:
    """An encoder with a pair similarity (GLoRIA's local branch) scores every image against every
    prompt of every format while its images pass; the prompts are prepared once here."""
    enc = job.encoder
    if enc.pair_similarity is None or enc.text_encoder is None:
        return
    job.pair_texts = list(dict.fromkeys(p for fmt in FORMATS for ps in prompt_set(fmt, classes).values() for p in ps))
    job.pair_prepared = enc.pair_similarity.prepare(job.pair_texts)


def _pair_scores(job: _Job, x: torch.Tensor, device: torch.device, precision: str) -> np.ndarray | None:
    if job.pair_prepared is None:
        return None
    x = x.to(device, non_blocking=device.type == "cuda").to(PRECISIONS[precision])
    return job.encoder.pair_similarity(x, job.pair_prepared).float().cpu().numpy()


def _encode(job: _Job, x: torch.Tensor, device: torch.device, precision: str) -> np.ndarray:
    dtype = PRECISIONS[precision]
    x = x.to(device, non_blocking=device.type == "cuda")
    with torch.inference_mode():
        return job.encoder.encode_images(x.to(dtype)).float().cpu().numpy()


def _prepare(encoder: Encoder, device: torch.device, precision: str) -> None:
    if precision == "fp16" and device.type == "cpu":
        raise EmbedkitError("--precision fp16 needs a GPU; on CPU use fp32 (default) or bf16")
    encoder.to(device)
    encoder.image_tower.to(PRECISIONS[precision]).eval()


def text_sets(encoder: Encoder, classes: tuple[str, ...]) -> dict[str, TextSet]:
    """Prompt embeddings of every zero-shot format, encoded one class at a time (as the authors did);
    none for a vision-only encoder."""
    out = {}
    if encoder.vision_only:
        return out
    with torch.inference_mode():
        for fmt in FORMATS:
            prompts, index, embs = [], [], []
            for c, texts in enumerate(prompt_set(fmt, classes).values()):
                for start in range(0, len(texts), 256):
                    embs.append(encoder.encode_texts(texts[start:start + 256]).float().cpu().numpy())
                prompts += texts
                index += [c] * len(texts)
            out[fmt] = TextSet(np.concatenate(embs), prompts, np.asarray(index))
    return out


def _versions() -> dict:
    import h5py
    import open_clip
    import transformers

    import embedkit

    return {"embedkit": embedkit.__version__, "torch": torch.__version__, "open_clip": open_clip.__version__,
            "transformers": transformers.__version__, "h5py": h5py.__version__, "numpy": np.__version__}


def resolve_shard(cfg: ExtractConfig) -> tuple[int, int] | None:
    """``--shard i/n``, or torchrun's RANK/WORLD_SIZE, or None for a single process."""
    shard = cfg.shard
    if shard is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        shard = (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
    if shard is not None and not 0 <= shard[0] < shard[1]:
        raise EmbedkitError(f"--shard {shard[0]}/{shard[1]}: need 0 <= i < n")
    return shard


def shard_chunks(n_chunks: int, shard: tuple[int, int] | None) -> range:
    """The contiguous block of chunks shard i of n owns (sizes differ by at most one chunk)."""
    if shard is None:
        return range(n_chunks)
    i, n = shard
    return range(i * n_chunks // n, (i + 1) * n_chunks // n)


def extract(cfg: ExtractConfig, *, on_progress: Callable[[int, int], None] | None = None) -> list[ExtractResult]:
    """Fill (or reuse) one cache file per model; see the module docstring.

    Sharded (``cfg.shard`` or under torchrun), each process fills the chunks of its own block and
    the last shard to finish assembles the file, which is then identical to an unsharded run.
    """
    manifest = read_manifest(cfg.manifest)
    shard = resolve_shard(cfg)
    device = resolve_device(cfg.device)
    if cfg.precision not in PRECISIONS:
        raise EmbedkitError(f"--precision {cfg.precision!r}: choose fp32, bf16 or fp16")
    if cfg.dtype not in ("float32", "float16"):
        raise EmbedkitError(f"--dtype {cfg.dtype!r}: choose float32 or float16")
    jobs = []
    for name in cfg.models:
        enc = load_encoder(name, weights=cfg.weights.get(name), tokenizer=cfg.tokenizers.get(name), seed=cfg.seed)
        fields = key_fields(enc, manifest, dtype=cfg.dtype, precision=cfg.precision)
        jobs.append(_Job(name, enc, fields, cache_path(cfg.cache_dir, name, cache_key(fields))))
    results: dict[str, ExtractResult] = {}
    suffix = f".shard-{shard[0]}-of-{shard[1]}.lock" if shard else ".lock"
    with ExitStack() as stack:
        for job in jobs:
            stack.enter_context(_lock(job.path, suffix, wait=cfg.wait))
        pending = []
        for job in jobs:
            if job.path.is_file():
                cache = read_cache(job.path, expect=job.fields)
                if cfg.text_only:
                    _refuse_text_only_pairs(job)
                    replace_text(job.path, text_sets(job.encoder, manifest.classes), {})
                results[job.name] = ExtractResult(job.name, job.path, len(cache.image_id), cache.embeddings.shape[1],
                                                  0.0, True, cache.bad)
            elif cfg.text_only:
                raise EmbedkitError(f"{job.path}: no cache to refresh; run `embedkit extract` without --text-only first")
            else:
                job.parts = _Parts(job.path, cache_key(job.fields))
                pending.append(job)
        if pending:
            start = time.perf_counter()
            _run(pending, manifest, cfg, device, on_progress, shard)
            seconds = time.perf_counter() - start
            for job in pending:
                results[job.name] = _join(job, manifest, cfg, device, seconds, shard)
    return [results[name] for name in cfg.models]


def _join(job: _Job, manifest: Manifest, cfg: ExtractConfig, device: torch.device, seconds: float,
          shard: tuple[int, int] | None) -> ExtractResult:
    """Assemble the file when every chunk is done (unsharded: always); otherwise report the shard done."""
    if shard is None:
        return _assemble(job, manifest, cfg, device, seconds)
    chunks = _chunks(len(manifest), cfg.chunk_rows)
    mine = sum(len(chunks[k]) for k in shard_chunks(len(chunks), shard))
    waiting = ExtractResult(job.name, job.path, mine, job.encoder.embed_dim, seconds, False, [], joined=False)
    if not all(job.parts.done(k) for k in range(len(chunks))):
        return waiting
    with _lock(job.path, quiet=True) as got:
        if not got or job.path.is_file():  # another shard is assembling, or has
            return waiting
        return _assemble(job, manifest, cfg, device, seconds)


def _refuse_text_only_pairs(job: _Job) -> None:
    if job.encoder.pair_similarity is not None:
        raise EmbedkitError(f"{job.name}: its zero-shot similarity (GLoRIA's word-region branch) is computed from the "
                            f"images, so --text-only cannot refresh it; delete {job.path} and extract again with "
                            "--tokenizer DIR")


def _with_pairs(text: dict[str, TextSet], job: _Job, valid: list[np.ndarray], n_chunks: int) -> dict[str, TextSet]:
    """Attach each format's (N, M) columns of the pair similarity (kept image rows only)."""
    if not job.pair_texts:
        return text
    pairs = [job.parts.load_pairs(k) for k in range(n_chunks)]
    if any(p is None for p in pairs):
        raise EmbedkitError(f"{job.path}: chunks without the pair similarity; delete {job.parts.dir} and extract again")
    matrix = np.concatenate([p[ok] for p, ok in zip(pairs, valid)])
    column = {t: i for i, t in enumerate(job.pair_texts)}
    return {fmt: TextSet(s.embeddings, s.prompts, s.class_index, matrix[:, [column[p] for p in s.prompts]])
            for fmt, s in text.items()}


def _chunks(n: int, rows: int) -> list[range]:
    return [range(s, min(s + rows, n)) for s in range(0, n, rows)]


def _run(jobs: list[_Job], manifest: Manifest, cfg: ExtractConfig, device: torch.device,
         on_progress: Callable[[int, int], None] | None, shard: tuple[int, int] | None = None) -> None:
    chunks = _chunks(len(manifest), cfg.chunk_rows)
    owned = shard_chunks(len(chunks), shard)
    todo = [k for k in owned if any(not j.parts.done(k) for j in jobs)]
    for job in jobs:
        _prepare(job.encoder, device, cfg.precision)
        _prepare_pairs(job, manifest.classes)
    batches = [list(chunks[k][s:s + cfg.batch_size]) for k in todo for s in range(0, len(chunks[k]), cfg.batch_size)]
    dataset = _Rows([manifest.image_path(r) for r in manifest.rows], [j.encoder.preprocess for j in jobs])
    workers = auto_workers(device) if cfg.workers is None else cfg.workers
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=_collate,
                                         pin_memory=device.type == "cuda", persistent_workers=False)
    done_rows, total = sum(len(chunks[k]) for k in owned if k not in todo), sum(len(chunks[k]) for k in owned)
    if on_progress:
        on_progress(done_rows, total)
    for rows, tensors, errors in loader:
        bad = [(manifest.rows[r]["image_id"], e) for r, e in zip(rows, errors) if e]
        if bad and not cfg.skip_bad:
            raise EmbedkitError(f"bad image: {bad[0][1]} (row image_id {bad[0][0]}); fix or remove it, "
                                "or pass --skip-bad to leave bad images out")
        k = rows[0] // cfg.chunk_rows
        for job, x in zip(jobs, tensors):
            if job.parts.done(k):
                continue
            buf = job.buffers.setdefault(k, ([], [], [], []))
            buf[0].append(_encode(job, x, device, cfg.precision))
            buf[1].append(np.array([not e for e in errors]))
            buf[2].extend(errors)
            pairs = _pair_scores(job, x, device, cfg.precision)
            if pairs is not None:
                buf[3].append(pairs)
            if sum(len(v) for v in buf[1]) == len(chunks[k]):
                job.parts.save(k, np.concatenate(buf[0]), np.concatenate(buf[1]), buf[2],
                               np.concatenate(buf[3]) if buf[3] else None)
                del job.buffers[k]
        done_rows += len(rows)
        if on_progress:
            on_progress(done_rows, total)


def _assemble(job: _Job, manifest: Manifest, cfg: ExtractConfig, device: torch.device, seconds: float) -> ExtractResult:
    chunks = _chunks(len(manifest), cfg.chunk_rows)
    valid, errors = [], []
    for k in range(len(chunks)):  # masks and errors first: the file's N must be known before writing
        _, ok, errs = job.parts.load(k)
        valid.append(ok)
        errors += errs
    keep = np.flatnonzero(np.concatenate(valid))
    bad = [(manifest.rows[i]["image_id"], e) for i, e in enumerate(errors) if e]

    def pieces():
        out = 0
        for k in range(len(chunks)):
            emb, ok, _ = job.parts.load(k)
            yield out, emb[ok]
            out += int(ok.sum())

    rows = [manifest.rows[i] for i in keep]
    meta = {c: [r[c] for r in rows] for c in ("label", "sex", "split", "patient_id")} | {"age": [int(r["age"]) for r in rows]}
    enc = job.encoder
    text = {}
    if enc.text_encoder is not None:
        enc.to(device)
        text = _with_pairs(text_sets(enc, manifest.classes), job, valid, len(chunks))
    attrs = {"key": cache_key(job.fields), "key_fields": job.fields, "model": job.name,
             "weights_digest": json.loads(enc.describe()).get("weights", ""), "description": enc.describe(),
             "manifest": str(manifest.path), "manifest_digest": manifest.digest(), "versions": _versions(),
             "dtype": cfg.dtype, "precision": cfg.precision, "device": str(device), "normalized": enc.normalized, "vision_only": enc.vision_only,
             "logit_scale": enc.logit_scale, "embed_dim": enc.embed_dim,
             "text_missing": "" if text else "no tokenizer: run `embedkit extract --text-only --tokenizer DIR`"}
    write_cache(job.path, embeddings_chunks=pieces(), n=len(keep), dim=enc.embed_dim,
                image_id=[r["image_id"] for r in rows], meta=meta, classes=manifest.classes, text=text, attrs=attrs,
                bad=bad, dtype=cfg.dtype)
    job.parts.remove()
    return ExtractResult(job.name, job.path, len(keep), enc.embed_dim, seconds, False, bad)
