"""Metrics: one run's full evaluation (every metric, 1,000 bootstrap and 1,000 permutation replicates)."""

from __future__ import annotations

import numpy as np

from common import timed


def evaluate_time(n_boot: int = 1000) -> dict:
    from embedkit.metrics import evaluate

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(6), 40)
    sex = np.tile(np.repeat(["M", "F"], 20), 6)
    age = np.tile(np.repeat(["young", "old", "young", "old"], 10), 6)
    logits = rng.normal(size=(240, 6))
    logits[np.arange(240), y] += 1.2
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    groups = {"sex": sex, "age": age, "sex_age": np.char.add(np.char.add(sex, "-"), age)}
    seconds = timed(lambda: evaluate(y, proba, groups=groups, classes=tuple("ABCDEF"), n_boot=n_boot, n_perm=n_boot),
                    repeat=5)
    return {"n": 240, "n_boot": n_boot, "seconds": seconds}
