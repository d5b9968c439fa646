"""Helpers shared by the benchmarks: timing, peak memory of a child process, full-size random encoders, tables."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def table(header, rows) -> str:
    """A Markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(out + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]) + "\n"


def cpu_model() -> str:
    """The processor's name as Linux reports it (figures move 2-3x between the machines these runs land on)."""
    import platform

    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def timed_into(spent: dict, name: str, fn):
    """``fn``, adding the wall time of every call to ``spent[name]``: a child times the library's own calls."""
    def wrapper(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
    return wrapper


def timed(fn, *args, repeat: int = 1, **kw) -> float:
    """Best of ``repeat`` wall-clock runs, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args, **kw)
        best = min(best, time.perf_counter() - t0)
    return best


PEAK = """
import json as _j, resource as _r
def _peak_mib():
    try:
        with open("/proc/self/status") as fh:
            return next(int(l.split()[1]) for l in fh if l.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return _r.getrusage(_r.RUSAGE_SELF).ru_maxrss / 1024
"""


def child(code: str, env: dict | None = None) -> dict:
    """Run ``code`` in a fresh Python; it prints one JSON object last. Adds its own peak RSS (MiB): Linux's VmHWM
    (ru_maxrss would also count the parent's peak, which Linux carries into a child across fork and exec);
    ``code`` may call ``_peak_mib()`` itself for the peak so far."""
    import os

    wrapped = PEAK + code + "print(_j.dumps({**RESULT, 'peak_rss_mib': _peak_mib()}))\n"
    out = subprocess.run([sys.executable, "-c", wrapped], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, **(env or {})))
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def full_encoder(name: str):
    """The published architecture with random weights (no downloads), wrapped by the family's own code."""
    import torch

    from embedkit.models import bert, biomedclip, clip, gloria, medclip

    torch.manual_seed(0)
    if name == "clip":
        return clip._encoder(clip.build(clip.FULL), clip.FULL, "clip", "random")
    if name == "biomedclip":
        model = biomedclip.build(biomedclip.PUBLISHED_CONFIG, bert.BIOMED_BERT)
        return biomedclip._encoder(model, biomedclip.PUBLISHED_CONFIG, None, "biomedclip", "random")
    if name in ("medclip-vit", "medclip-rn50"):
        variant = name.split("-")[1]
        return medclip._encoder(medclip.MedCLIPModel(variant, False, bert.CLINICAL_BERT, 512), variant, False, None, "random")
    if name == "gloria":
        return gloria._encoder(gloria._build(gloria.CONFIG, False), gloria.CONFIG, False, None, "random")
    raise ValueError(name)


def synthetic_store(path: Path, x, labels, splits, classes, *, model: str = "synthetic", images: Path | None = None) -> Path:
    """A store of embeddings ``x`` and, beside it (``path.with_suffix('.csv')``), its manifest: one small
    file per row (the content keys the store is indexed by), sexes and ages alternating in runs of 7 and 11
    (so every class meets every group). Stores given the
    same ``images`` folder index the same image files, so one manifest serves them all."""
    from embedkit.cache.identity import content_key
    from embedkit.cache.layout import write_cache
    from embedkit.manifest import write_manifest

    folder = images or path.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    rows, index, keys = [], {}, []
    for i in range(len(x)):
        f = folder / f"i{i}.png"
        if images is None or not f.exists():
            f.write_bytes(f"{model if images is None else 'shared'} image {i}".encode())
        st, key = f.stat(), content_key(f)
        index[str(f.resolve())] = (st.st_size, st.st_mtime_ns, key)
        keys.append(key)
        rows.append({"image_id": f"i{i}", "path": str(f), "patient_id": f"p{i}", "label": labels[i],
                     "sex": "MF"[(i // 7) % 2], "age": str((40, 70)[(i // 11) % 2]), "split": splits[i]})
    write_manifest(path.with_suffix(".csv"), rows)
    return write_cache(path, embeddings_chunks=[(0, x)], n=len(x), dim=x.shape[1], image_key=keys, index=index,
                       classes=tuple(classes), text={}, attrs={"key": model, "model": model}, bad=[])
