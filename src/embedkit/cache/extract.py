"""`embedkit extract`: run each frozen encoder once over a manifest and fill its cache file.

Images are decoded once per row (in DataLoader workers) and handed to every requested model's
own preprocessing. Rows are processed in fixed chunks (one batch each by default); each finished
chunk is saved atomically under ``<cache>.parts/``, so a run killed at any moment loses at most the
batch in flight, and the chunk boundaries (hence the batches, hence the numbers) never change.
The HDF5 file is assembled and renamed into place only at the end.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from embedkit.cache.identity import RowKey, row_keys
from embedkit.cache.layout import (LAYOUT_VERSION, Cache, TextSet, cache_key, cache_path, read_or_set_aside,
                                   replace_text, write_cache)
from embedkit.cache.parts import Parts, lock, resolve_shard, shard_chunks
from embedkit.cache.parts import chunks as chunks_of
from embedkit.devices import auto_workers, resolve_device
from embedkit.errors import EmbedkitError
from embedkit.manifest import Manifest, read_manifest
from embedkit.models import Encoder, load_encoder
from embedkit.models.images import ImageRows, collate
from embedkit.prompts import FORMATS, prompt_set, text_classes
from embedkit.spec import SWEEP, WHERE, Count, Workers, check_bounds

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}    # spec.PRECISIONS as torch types


@dataclass
class ExtractConfig:
    """Everything ``extract`` needs; the CLI fills it from options."""

    manifest: Path
    models: tuple[str, ...]
    cache_dir: Path = WHERE.cache_dir
    weights: dict[str, Path] = field(default_factory=dict)
    tokenizers: dict[str, Path] = field(default_factory=dict)
    batch_size: Count = SWEEP.batch_size
    workers: Workers | None = None            # None: devices.auto_workers(device)
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

    def __post_init__(self):
        check_bounds(self)

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
    added: int = 0                            # rows this extraction encoded and appended (0: nothing was missing)

    @property
    def images_per_s(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else float("inf")


def key_fields(encoder: Encoder, *, dtype: str, precision: str) -> dict:
    """Everything that changes the numbers of a store's rows (its key is their hash): the encoder with
    its weights and preprocessing, dtype and precision. Images are rows, found by content key; labels,
    splits and attributes come from the manifest each experiment joins."""
    return {"layout": LAYOUT_VERSION, "model": encoder.describe(), "dtype": dtype, "precision": precision}


@dataclass
class _Job:
    name: str
    encoder: Encoder
    fields: dict
    path: Path
    parts: Parts | None = None
    buffers: dict = field(default_factory=dict)
    pair_texts: list[str] = field(default_factory=list)   # prompts of the pair similarity, deduplicated
    pair_prepared: object = None
    store: Cache | None = None                            # the store as it was before this extraction
    keys: list[RowKey] = field(default_factory=list)      # content key of every manifest row
    todo: list[int] = field(default_factory=list)         # manifest rows to encode (one per missing key)
    classes: tuple[str, ...] = ()                         # the classes the prompt sets will cover


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
    x = x.to(device, non_blocking=device.type == "cuda").to(DTYPES[precision])
    return job.encoder.pair_similarity(x, job.pair_prepared).float().cpu().numpy()


def _encode(job: _Job, x: torch.Tensor, device: torch.device, precision: str) -> np.ndarray:
    dtype = DTYPES[precision]
    x = x.to(device, non_blocking=device.type == "cuda")
    with torch.inference_mode():
        return job.encoder.encode_images(x.to(dtype)).float().cpu().numpy()


def _prepare(encoder: Encoder, device: torch.device, precision: str) -> None:
    if precision == "fp16" and device.type == "cpu":
        raise EmbedkitError("--precision fp16 needs a GPU; on CPU use fp32 (default) or bf16")
    encoder.to(device)
    encoder.image_tower.to(DTYPES[precision]).eval()


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


def extract(cfg: ExtractConfig, *, on_progress: Callable[[int, int], None] | None = None) -> list[ExtractResult]:
    """Fill (or reuse) one cache file per model; see the module docstring.

    Sharded (``cfg.shard`` or under torchrun), each process fills the chunks of its own block and
    the last shard to finish assembles the file, which is then identical to an unsharded run.
    """
    manifest = read_manifest(cfg.manifest)
    shard = resolve_shard(cfg.shard)
    device = resolve_device(cfg.device)
    if cfg.precision not in DTYPES:
        raise EmbedkitError(f"--precision {cfg.precision!r}: choose fp32, bf16 or fp16")
    if cfg.dtype not in ("float32", "float16"):
        raise EmbedkitError(f"--dtype {cfg.dtype!r}: choose float32 or float16")
    jobs = []
    for name in cfg.models:
        enc = load_encoder(name, weights=cfg.weights.get(name), tokenizer=cfg.tokenizers.get(name), seed=cfg.seed)
        fields = key_fields(enc, dtype=cfg.dtype, precision=cfg.precision)
        jobs.append(_Job(name, enc, fields, cache_path(cfg.cache_dir, name, cache_key(fields))))
    results: dict[str, ExtractResult] = {}
    suffix = f".shard-{shard[0]}-of-{shard[1]}.lock" if shard else ".lock"
    with ExitStack() as stack:
        for job in jobs:
            stack.enter_context(lock(job.path, suffix, wait=cfg.wait))
        pending = []
        for job in jobs:
            _plan(job, manifest, cfg)
            if cfg.text_only:
                results[job.name] = _refresh_text(job, manifest)
            elif job.store is not None and not job.todo and _covered(job, manifest):
                results[job.name] = ExtractResult(job.name, job.path, len(job.store.image_id), job.encoder.embed_dim,
                                                  0.0, True, job.store.bad)
            else:
                pending.append(job)
        for todo, group in _by_todo(pending).items():  # one decoding pass per set of rows to encode
            sub = Manifest.of_rows(manifest.path, [manifest.rows[i] for i in group[0].todo], manifest.classes,
                           manifest.extra_columns)
            for job in group:
                job.parts = Parts(job.path, cache_key(job.fields) + todo)
            start = time.perf_counter()
            _run(group, sub, cfg, device, on_progress, shard)
            seconds = time.perf_counter() - start
            for job in group:
                results[job.name] = _join(job, sub, manifest, cfg, device, seconds, shard)
    return [results[name] for name in cfg.models]


def _plan(job: _Job, manifest: Manifest, cfg: ExtractConfig) -> None:
    """What this extraction must add to the job's store: rows whose image content it lacks."""
    job.store = read_or_set_aside(job.path, expect=job.fields)
    job.keys = row_keys(manifest, job.store.index if job.store else {})
    have = set(job.store.image_id) if job.store else set()
    bad = {p for p, _ in job.store.bad} if job.store else set()
    seen: set[str] = set()
    for i, k in enumerate(job.keys):
        if k.path in bad or (k.key is not None and (k.key in have or k.key in seen)):
            continue
        seen.add(k.key)
        job.todo.append(i)
    stored = job.store.classes if job.store else ()
    job.classes = tuple(dict.fromkeys(stored + text_classes(manifest.classes)))


def _covered(job: _Job, manifest: Manifest) -> bool:
    """Nothing to write: every row indexed as it is now, and prompts for every class when there is a text tower."""
    index, bad = job.store.index, {p for p, _ in job.store.bad}
    fresh = all(k.path in bad or index.get(k.path) == (k.size, k.mtime_ns, k.key) for k in job.keys)
    prompts = (job.encoder.text_encoder is None or job.encoder.vision_only
               or set(text_classes(manifest.classes)) <= set(job.store.classes))
    return fresh and (prompts or not job.store.text)


def _by_todo(jobs: list[_Job]) -> dict[str, list[_Job]]:
    groups: dict[str, list[_Job]] = {}
    for job in jobs:
        digest = hashlib.sha256(",".join(str(job.keys[i].key or job.keys[i].path) for i in job.todo).encode()).hexdigest()
        groups.setdefault(digest[:16], []).append(job)
    return groups


def _refresh_text(job: _Job, manifest: Manifest) -> ExtractResult:
    if job.store is None:
        raise EmbedkitError(f"{job.path}: no store to refresh; run `embedkit extract` without --text-only first")
    _refuse_text_only_pairs(job)
    replace_text(job.path, text_sets(job.encoder, job.classes), job.classes, {})
    return ExtractResult(job.name, job.path, len(job.store.image_id), job.encoder.embed_dim, 0.0, True, job.store.bad)


def _join(job: _Job, manifest: Manifest, full: Manifest, cfg: ExtractConfig, device: torch.device, seconds: float,
          shard: tuple[int, int] | None) -> ExtractResult:
    """Assemble the file when every chunk is done (unsharded: always); otherwise report the shard done."""
    if shard is None:
        return _assemble(job, manifest, full, cfg, device, seconds)
    chunks = chunks_of(len(manifest), cfg.chunk_rows)
    mine = sum(len(chunks[k]) for k in shard_chunks(len(chunks), shard))
    waiting = ExtractResult(job.name, job.path, mine, job.encoder.embed_dim, seconds, False, [], joined=False)
    if not all(job.parts.done(k) for k in range(len(chunks))):
        return waiting
    with lock(job.path, quiet=True) as got:
        if not got or not job.parts.dir.is_dir():  # another shard is assembling, or has
            return waiting
        return _assemble(job, manifest, full, cfg, device, seconds)


def _refuse_text_only_pairs(job: _Job) -> None:
    if job.encoder.pair_similarity is not None:
        raise EmbedkitError(f"{job.name}: its zero-shot similarity (GLoRIA's word-region branch) is computed from the "
                            f"images, so --text-only cannot refresh it; delete {job.path} and extract again with "
                            "--tokenizer DIR")


def _with_pairs(text: dict[str, TextSet], job: _Job, valid: list[np.ndarray], n_chunks: int) -> dict[str, TextSet]:
    """Attach each format's (N, M) columns of the pair similarity: the stored rows' values, then the
    new rows' (NaN where a stored row predates a prompt: zero-shot then asks for a re-extraction)."""
    if not job.pair_texts:
        return text
    pairs = [job.parts.load_pairs(k) for k in range(n_chunks)]
    if any(p is None for p in pairs):
        raise EmbedkitError(f"{job.path}: chunks without the pair similarity; delete {job.parts.dir} and extract again")
    new = np.concatenate([p[ok] for p, ok in zip(pairs, valid)]) if pairs else np.zeros((0, len(job.pair_texts)))
    column = {t: i for i, t in enumerate(job.pair_texts)}
    n_old = len(job.store.image_id) if job.store else 0
    out = {}
    for fmt, s in text.items():
        old = np.full((n_old, len(s.prompts)), np.nan, dtype=np.float32)
        before = job.store.text.get(fmt) if job.store else None
        if before is not None and before.local is not None:
            at = {p: i for i, p in enumerate(before.prompts)}
            for j, p in enumerate(s.prompts):
                if p in at:
                    old[:, j] = before.local[:, at[p]]
        out[fmt] = TextSet(s.embeddings, s.prompts, s.class_index,
                           np.concatenate([old, new[:, [column[p] for p in s.prompts]]]))
    return out


def _run(jobs: list[_Job], manifest: Manifest, cfg: ExtractConfig, device: torch.device,
         on_progress: Callable[[int, int], None] | None, shard: tuple[int, int] | None = None) -> None:
    chunks = chunks_of(len(manifest), cfg.chunk_rows)
    owned = shard_chunks(len(chunks), shard)
    todo = [k for k in owned if any(not j.parts.done(k) for j in jobs)]
    for job in jobs:
        _prepare(job.encoder, device, cfg.precision)
        _prepare_pairs(job, job.classes)
    batches = [list(chunks[k][s:s + cfg.batch_size]) for k in todo for s in range(0, len(chunks[k]), cfg.batch_size)]
    dataset = ImageRows([manifest.image_path(r) for r in manifest.rows], [j.encoder.preprocess for j in jobs])
    workers = auto_workers(device) if cfg.workers is None else cfg.workers
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate,
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


def _assemble(job: _Job, sub: Manifest, full: Manifest, cfg: ExtractConfig, device: torch.device,
              seconds: float) -> ExtractResult:
    """Write the store again (under .partial, then rename) with the new rows appended, the index
    updated for every row of ``full`` and the prompt sets covering its classes."""
    chunks = chunks_of(len(sub), cfg.chunk_rows)
    valid, errors = [], []
    for k in range(len(chunks)):  # masks and errors first: the file's N must be known before writing
        _, ok, errs = job.parts.load(k)
        valid.append(ok)
        errors += errs
    ok_rows = np.flatnonzero(np.concatenate(valid)) if valid else np.zeros(0, dtype=np.int64)
    new_keys = [job.keys[job.todo[i]].key for i in ok_rows]
    bad_new = [(job.keys[job.todo[i]].path, e) for i, e in enumerate(errors) if e]
    old = job.store

    def pieces():
        out = 0
        if old is not None and len(old.image_id):
            yield 0, old.embeddings
            out = len(old.image_id)
        for k in range(len(chunks)):
            emb, ok, _ = job.parts.load(k)
            yield out, emb[ok]
            out += int(ok.sum())

    enc, bad = job.encoder, (old.bad if old else []) + bad_new
    bad_paths = {p for p, _ in bad}
    index = dict(old.index if old else {}) | {k.path: (k.size, k.mtime_ns, k.key) for k in job.keys
                                              if k.key is not None and k.path not in bad_paths}
    text = {}
    if enc.text_encoder is not None:  # prompts are embedded once per store and class set, then reused
        base = old.text if old is not None and old.text and tuple(old.classes) == job.classes else None
        if base is None:
            enc.to(device)
            base = text_sets(enc, job.classes)
        text = _with_pairs(base, job, valid, len(chunks))
    n_old = len(old.image_id) if old else 0
    manifests = (old.attrs.get("manifests", []) if old else []) + [{"path": str(full.path), "digest": full.digest(),
                                                                    "rows": len(full), "added": len(new_keys)}]
    attrs = {"key": cache_key(job.fields), "key_fields": job.fields, "model": job.name,
             "weights_digest": json.loads(enc.describe()).get("weights", ""), "description": enc.describe(),
             "manifests": manifests[-50:], "versions": _versions(), "dtype": cfg.dtype, "precision": cfg.precision,
             "device": str(device), "normalized": enc.normalized, "vision_only": enc.vision_only,
             "logit_scale": enc.logit_scale, "embed_dim": enc.embed_dim,
             "text_missing": "" if text else "no tokenizer: run `embedkit extract --text-only --tokenizer DIR`"}
    write_cache(job.path, embeddings_chunks=pieces(), n=n_old + len(new_keys), dim=enc.embed_dim,
                image_key=list(old.image_id if old else []) + new_keys, index=index, classes=job.classes,
                text=text, attrs=attrs, bad=bad, dtype=cfg.dtype)
    job.parts.remove()
    return ExtractResult(job.name, job.path, n_old + len(new_keys), enc.embed_dim, seconds, False, bad_new,
                         added=len(new_keys))
