"""Evaluations of run folders, cached beside their predictions (``<run>/.evaluations/<key>.pkl``).

The report and ``embedkit results`` evaluate every run with its bootstrap and permutation replicates — minutes
per run at 100k+ test rows — and both are usually run on the same folders. The key covers the evaluation's
settings, the predictions file (size and modification time) and the source of the code that computes the
metrics, so a changed file, setting or metric never reuses a stale result; deleting the folder is always safe.
"""

from __future__ import annotations

import functools
import hashlib
import json
import pickle
from pathlib import Path

CACHE = ".evaluations"


CODE = ("metrics/*.py", "predictions.py", "runs.py", "attributes.py", "tasks.py")   # what computes an evaluation


def code_files() -> list[Path]:
    """The source files whose text an evaluation depends on (reading the file, resampling, every metric)."""
    root = Path(__file__).parent
    return sorted(f for pattern in CODE for f in root.glob(pattern))


@functools.cache
def _code_digest() -> str:
    """SHA-256 of the metric code's source: a change to any of it invalidates every cached evaluation."""
    h = hashlib.sha256()
    for f in code_files():
        h.update(f.read_bytes())
    return h.hexdigest()


def evaluate_folder(folder: Path, *, threads: int | None = None, **settings) -> dict:
    """``runs.evaluate_predictions(read_predictions(folder/predictions.csv), **settings)``, computed once;
    ``threads`` changes how fast, never what, so it is not part of the key."""
    from embedkit.predictions import PREDICTIONS, read_predictions
    from embedkit.runs import evaluate_predictions

    path = Path(folder) / PREDICTIONS
    st = path.stat()
    text = json.dumps({"settings": settings, "file": [st.st_size, st.st_mtime_ns], "code": _code_digest()},
                      sort_keys=True, default=repr)
    cached = Path(folder) / CACHE / f"{hashlib.sha256(text.encode()).hexdigest()[:32]}.pkl"
    if cached.is_file():
        try:
            return pickle.loads(cached.read_bytes())
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError):
            pass                                            # unreadable: evaluate again and overwrite
    result = evaluate_predictions(read_predictions(path), threads=threads, **settings)
    cached.parent.mkdir(exist_ok=True)
    tmp = cached.with_name(cached.name + ".partial")
    tmp.write_bytes(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    tmp.replace(cached)
    return result
