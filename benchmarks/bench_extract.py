"""Extraction: pipeline vs pure forward (full size), peak memory vs N, cache read speed, shards 1 vs 2."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from common import child, timed


def pipeline_vs_forward(model: str, workers: int, n: int = 48, size: int = 512) -> dict:
    """Images/s of `extract` (decode in a worker, preprocess, forward, HDF5) against the bare forward of
    the same encoder on the same preprocessed batches, in one process, side by side."""
    return child(f"""
import time, tempfile, torch
from pathlib import Path
from PIL import Image
from benchmarks.common import full_encoder
from embedkit.cache.extract import ExtractConfig, extract
from embedkit.data.phantom import PhantomSpec, make_phantom
from embedkit.models import get, load_encoder
from embedkit.models.images import decode
tmp = Path(tempfile.mkdtemp())
make_phantom(tmp / "d", PhantomSpec(per_group=max(5, {n} // 24 + 1), size={size}, seed=0))
weights = get("{model}").save(full_encoder("{model}"), tmp / ("w.bin" if "{model}" == "clip" else "w"))
enc = load_encoder("{model}", weights=weights)
from embedkit.manifest import read_manifest
m = read_manifest(tmp / "d/manifest.csv")
rows = m.rows[:{n}]
import csv
with open(tmp / "d/m.csv", "w", newline="") as fh:
    w = csv.DictWriter(fh, fieldnames=list(rows[0])); w.writeheader(); w.writerows(rows)
x = torch.stack([enc.preprocess(decode(m.image_path(r))) for r in rows])
enc.image_tower.eval()
with torch.inference_mode():
    enc.encode_images(x[:4])
    t0 = time.perf_counter()
    for i in range(0, len(x), 16):
        enc.encode_images(x[i:i + 16])
    forward = time.perf_counter() - t0
t0 = time.perf_counter()
r = extract(ExtractConfig(manifest=tmp / "d/m.csv", models=("{model}",), cache_dir=tmp / "c", batch_size=16, workers={workers},
                          weights={{"{model}": weights}}))[0]
total = time.perf_counter() - t0
pipeline = r.seconds  # decode, preprocess, forward, chunk writes; the once-per-file costs are reported apart
RESULT = dict(model="{model}", workers={workers}, n={n}, image_px={size}, forward_img_s={n} / forward, pipeline_img_s={n} / pipeline,
              ratio=forward / pipeline, fixed_s=total - pipeline)
""")


def peak_memory(n: int) -> dict:
    return child(f"""
import tempfile, time
from pathlib import Path
from embedkit.data.phantom import PhantomSpec, make_phantom
from embedkit.cache.extract import ExtractConfig, extract
tmp = Path(tempfile.mkdtemp())
make_phantom(tmp, PhantomSpec(per_group={n} // 24 + 1, size=16, seed=0))
before = _peak_mib()                    # this process's own peak so far (common.PEAK)
t0 = time.perf_counter()
r = extract(ExtractConfig(manifest=tmp / "manifest.csv", models=("clip-tiny",), cache_dir=tmp / "c", batch_size=256,
                          workers=1, rows_per_chunk=1024))[0]
RESULT = dict(n=r.n, seconds=time.perf_counter() - t0, rss_before_mib=before, embeddings_mib=r.n * r.dim * 4 / 2**20)
""")


def _embeddings_cache(path: Path, chunks, n: int, d: int, rows_per_chunk: int = 1024) -> Path:
    """A complete cache of ``n`` × ``d`` embeddings with placeholder metadata (what the read benchmarks need)."""
    from embedkit.cache.layout import write_cache

    return write_cache(path, embeddings_chunks=chunks, n=n, dim=d, image_key=[f"k{i}" for i in range(n)], index={},
                       classes=("x",), text={}, attrs={"key": "bench"}, bad=[], rows_per_chunk=rows_per_chunk)


def read_speed(n: int = 100_000, d: int = 512) -> dict:
    from embedkit.cache import read_cache

    tmp = Path(tempfile.mkdtemp())
    x = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
    path = _embeddings_cache(tmp / "big.h5", [(0, x)], n, d)
    import h5py

    raw = timed(lambda: h5py.File(path, "r")["embeddings"][()], repeat=3)
    full = timed(lambda: read_cache(path), repeat=3)
    import hashlib

    digest = timed(lambda: hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest(), repeat=3)
    mb = x.nbytes / 2**20
    return {"n": n, "d": d, "mib": mb, "embeddings_mb_s": mb / raw, "whole_cache_mb_s": mb / full, "read_cache_s": full,
            "digest_s": digest}


def shards(n: int = 24) -> dict:
    """Throughput of one process on one core against two shard processes on two cores (full-size CLIP)."""
    return child(f"""
import os, subprocess, sys, tempfile, time, csv
from pathlib import Path
from embedkit.data.phantom import PhantomSpec, make_phantom
tmp = Path(tempfile.mkdtemp())
make_phantom(tmp / "d", PhantomSpec(per_group=5, size=256, seed=0))
from embedkit.manifest import read_manifest
m = read_manifest(tmp / "d/manifest.csv")
rows = m.rows[:{n}]
with open(tmp / "d/m.csv", "w", newline="") as fh:
    w = csv.DictWriter(fh, fieldnames=list(rows[0])); w.writeheader(); w.writerows(rows)
from benchmarks.common import full_encoder
from embedkit.models import get
weights = get("clip").save(full_encoder("clip"), tmp / "w.bin")
code = '''
import json, sys
from embedkit.cache.extract import ExtractConfig, extract
shard = None if sys.argv[2] == "-" else tuple(int(v) for v in sys.argv[2].split("/"))
r = extract(ExtractConfig(manifest=sys.argv[1], models=("clip",), cache_dir=sys.argv[3], batch_size=8, workers=0,
                          rows_per_chunk=4, shard=shard, weights={{"clip": sys.argv[4]}}))[0]
print(json.dumps([r.seconds, r.n]))
'''
env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())
import json
def launch(shard, out):
    return subprocess.Popen([sys.executable, "-c", code, str(tmp / "d/m.csv"), shard, str(tmp / out), str(weights)],
                            env=env, stdout=subprocess.PIPE, text=True)
one = json.loads(launch("-", "one").communicate()[0].strip().splitlines()[-1])
procs = [launch(f"{{i}}/2", "two") for i in range(2)]
two = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
# extraction time only (model loading excluded); the two shards run concurrently
RESULT = dict(n={n}, one_process_img_s=one[1] / one[0], two_processes_img_s={n} / max(t for t, _ in two),
              speedup=one[0] / max(t for t, _ in two))
""")


def decode_rate(n: int = 20, size: int = 1024) -> dict:
    """Decode + CLIP preprocessing of NIH-sized 8-bit PNGs on one core (the GPU-side bottleneck)."""
    from PIL import Image

    from embedkit.models.images import ClipPreprocess, decode

    tmp = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    for i in range(n):
        img = (128 + 60 * np.sin(x / (20 + i)) + rng.normal(0, 20, (size, size))).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(tmp / f"{i}.png")
    pre = ClipPreprocess(224)
    t = timed(lambda: [pre(decode(tmp / f"{i}.png")) for i in range(n)], repeat=2)
    return {"n": n, "px": size, "img_s_per_core": n / t}


def join_merge_vs_virtual(n: int = 112_120, d: int = 512, shards: int = 8, rows_per_chunk: int = 1024) -> dict:
    """Joining the shards' output, two ways, on NIH-sized embeddings: the merge `extract` does (stream the
    `.parts/` chunks into one checksummed HDF5 file) against an HDF5 virtual dataset over one file per
    shard (the shard files themselves are the shards' work and not timed); then reading each result."""
    import h5py

    from embedkit.cache.parts import Parts

    tmp = Path(tempfile.mkdtemp())
    x = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
    starts = list(range(0, n, rows_per_chunk))
    parts = Parts(tmp / "merged.h5", "bench")
    for k, s in enumerate(starts):
        block = x[s:s + rows_per_chunk]
        parts.save(k, block, np.ones(len(block), bool), [""] * len(block))
    bounds = [starts[i * len(starts) // shards] for i in range(shards)] + [n]
    for i in range(shards):
        with h5py.File(tmp / f"shard-{i}.h5", "w") as f:
            f.create_dataset("embeddings", data=x[bounds[i]:bounds[i + 1]], chunks=(rows_per_chunk, d), fletcher32=True)

    def merge():
        pieces = ((s, parts.load(k)[0]) for k, s in enumerate(starts))
        _embeddings_cache(tmp / "merged.h5", pieces, n, d, rows_per_chunk)

    def virtual():
        layout = h5py.VirtualLayout(shape=(n, d), dtype=np.float32)
        for i in range(shards):
            rows = bounds[i + 1] - bounds[i]
            layout[bounds[i]:bounds[i + 1]] = h5py.VirtualSource(f"shard-{i}.h5", "embeddings", shape=(rows, d))
        with h5py.File(tmp / "virtual.h5", "w") as f:
            f.create_virtual_dataset("embeddings", layout)

    def read(name):
        with h5py.File(tmp / name, "r") as f:
            return f["embeddings"][()]

    merge_s, virtual_s = timed(merge, repeat=2), timed(virtual, repeat=2)
    assert np.array_equal(read("merged.h5"), read("virtual.h5"))
    mb = x.nbytes / 2**20
    rows = np.sort(np.random.default_rng(1).choice(n, 2_000, replace=False))

    def gather(name):
        with h5py.File(tmp / name, "r") as f:
            return f["embeddings"][rows]

    return {"n": n, "d": d, "shards": shards, "mib": mb, "merge_s": merge_s, "virtual_s": virtual_s,
            "merged_read_mb_s": mb / timed(read, "merged.h5", repeat=3),
            "virtual_read_mb_s": mb / timed(read, "virtual.h5", repeat=3),
            "merged_gather_s": timed(gather, "merged.h5", repeat=3), "virtual_gather_s": timed(gather, "virtual.h5", repeat=3)}


def kill_and_resume(model: str = "medclip-rn50", n: int = 600) -> dict:
    """Full-size extraction of ``n`` phantom images: an uninterrupted run, and a run killed at 50 % of
    that time then resumed. Batch-level parts mean the resume should take about half a full run."""
    return child(f"""
import json, os, signal, subprocess, sys, tempfile, time, csv
from pathlib import Path
from embedkit.data.phantom import PhantomSpec, make_phantom
tmp = Path(tempfile.mkdtemp())
make_phantom(tmp / "d", PhantomSpec(per_group=25, size=224, seed=0))
from benchmarks.common import full_encoder
from embedkit.models import get
weights = get("{model}").save(full_encoder("{model}"), tmp / "w")
code = '''
import json, sys, time
from embedkit.cache.extract import ExtractConfig, extract
t0 = time.perf_counter()
r = extract(ExtractConfig(manifest=sys.argv[1], models=("{model}",), cache_dir=sys.argv[2], batch_size=32, workers=0,
                          weights={{"{model}": sys.argv[3]}}))[0]
print(json.dumps([time.perf_counter() - t0, r.seconds]))
'''
env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=os.getcwd())
def launch(out):
    return subprocess.Popen([sys.executable, "-c", code, str(tmp / "d/manifest.csv"), str(tmp / out), str(weights)],
                            env=env, stdout=subprocess.PIPE, text=True)
full = json.loads(launch("a").communicate()[0].strip().splitlines()[-1])
p = launch("b")
time.sleep(0.5 * full[0])
p.send_signal(signal.SIGKILL); p.wait()
parts = len(list((tmp / "b").glob("*.parts/chunk-*.npz")))
resumed = json.loads(launch("b").communicate()[0].strip().splitlines()[-1])
a = next((tmp / "a").glob("*.h5")); b = next((tmp / "b").glob("*.h5"))
import h5py, numpy as np
with h5py.File(a) as fa, h5py.File(b) as fb:
    same = bool(np.array_equal(fa["embeddings"][()], fb["embeddings"][()]))
RESULT = dict(model="{model}", n={n}, full_s=full[0], resumed_s=resumed[0], ratio=resumed[0] / full[0],
              batches_kept=parts, bitwise_equal=same)
""")


def prompt_speed(n: int = 64) -> dict:
    """Full-size BiomedCLIP, ``n`` prompts spread over the three formats for the study's classes, one
    batch: padded to the 256-token context (before) against padded to the longest prompt (now). (All
    ~1,500 prompts at full context take over half an hour on one core here; the ratio is per token.)"""
    return child(f"N = {n}\n" + """
import time, torch
from embedkit.models import bert, biomedclip
from embedkit.prompts import FORMATS, prompt_set
from embedkit.manifest import STUDY_CLASSES
torch.manual_seed(0)
model = biomedclip.build(biomedclip.PUBLISHED_CONFIG, bert.BIOMED_BERT)
enc = biomedclip._encoder(model, biomedclip.PUBLISHED_CONFIG, bert.tiny_tokenizer(), "biomedclip", "random")
from open_clip.tokenizer import HFTokenizer
full_tok = HFTokenizer(str(enc.tokenizer_dir), context_length=256)
texts = [p for f in FORMATS for ps in prompt_set(f, STUDY_CLASSES).values() for p in ps]
texts = texts[::max(1, len(texts) // N)][:N]
batches = [texts]
with torch.inference_mode():
    t0 = time.perf_counter(); old = torch.cat([model.encode_text(full_tok(b), normalize=True) for b in batches]); t_old = time.perf_counter() - t0
    t0 = time.perf_counter(); new = torch.cat([enc.encode_texts(b) for b in batches]); t_new = time.perf_counter() - t0
RESULT = dict(prompts=len(texts), all_prompts=len([p for f in FORMATS for ps in prompt_set(f, STUDY_CLASSES).values() for p in ps]), full_context_s=t_old, longest_s=t_new, speedup=t_old / t_new,
              min_cosine=float(torch.nn.functional.cosine_similarity(old, new).min()))
""")
