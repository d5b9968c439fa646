"""Metrics: one run's full evaluation (every metric, 1,000 patient-level bootstrap and 1,000 permutation
replicates), on the paper's test size and on a 22,400-row test split (NIH at scale), with peak memory."""

from __future__ import annotations

import tracemalloc

import numpy as np

from common import timed


def _data(n: int, images_per_patient: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(6), n // 6)
    sex = rng.choice(["M", "F"], len(y))
    age = rng.choice(["young", "old"], len(y))
    logits = rng.normal(size=(len(y), 6))
    logits[np.arange(len(y)), y] += 1.2
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    patients = (np.arange(len(y)) / images_per_patient).astype(int).astype(str)
    groups = {"sex": sex, "age": age, "sex_age": np.char.add(np.char.add(sex, "-"), age)}
    return y, proba, groups, patients


def evaluate_time(n: int = 240, n_boot: int = 1000, images_per_patient: float = 1.27) -> dict:
    """Best-of-repeats seconds of one evaluate on one thread and on the default (a core per block of replicates,
    where there are several), without resampling, and the peak traced memory (patients: ~1.27 images each, as
    the NIH 6x200 test split: 241 images of 190 patients)."""
    from embedkit.metrics import evaluate
    from embedkit.metrics.resample import cores

    y, proba, groups, patients = _data(n, images_per_patient)

    def run(threads=1, n_boot=n_boot):
        return evaluate(y, proba, groups=groups, classes=tuple("ABCDEF"), patient_id=patients, n_boot=n_boot,
                        n_perm=n_boot, threads=threads)

    repeat = 5 if n <= 1000 else 1
    seconds, default = timed(run, repeat=repeat), timed(lambda: run(None), repeat=repeat)
    bare = timed(lambda: run(n_boot=1), repeat=repeat)
    tracemalloc.start()
    run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"n": len(y), "patients": len(set(patients)), "n_boot": n_boot, "seconds": seconds, "default_s": default,
            "cores": cores(), "bare_s": bare, "peak_mib": peak / 2**20}
