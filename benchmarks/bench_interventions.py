"""Interventions under honest comparison: how often each is reported as shrinking a gap beyond noise
(paired bootstrap CI of the change in |gap| entirely below 0) when there is no bias to remove (the
false-positive rate, nominal 2.5 % per gap), and when a bias is planted (the power), of two kinds: a rare group
whose class signal differs, and a training set where sex predicts the class."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

INTERVENTIONS = ("reweight", "resample", "groupdro", "adversarial", "offsets")


SHIFTS = ("rare group", "label shift")      # the planted biases (``dataset``)


def dataset(seed: int, shift: str | None, n: int = 1000):
    """Six classes, two sexes. Null (shift None): both groups alike and balanced. "rare group": women are 10 %
    of training and their class signal lies in other features (the shift of tests/heads/test_interventions.py).
    "label shift": sex shows in the image and, in training only, 90 % of women's images are of classes 0-2
    (men's balanced), so sex is a shortcut to the class that fails on the balanced test set."""
    rng = np.random.default_rng(seed)
    split = np.array(["train"] * 600 + ["val"] * 150 + ["test"] * 250)
    y = rng.integers(0, 6, n)
    sex = np.where(np.arange(n) % 2, "F", "M")
    x = rng.normal(size=(n, 16)).astype(np.float32)
    if shift == "rare group":
        sex = np.where(split == "train", np.where(rng.random(n) < 0.1, "F", "M"), sex)
        men, women = sex == "M", sex == "F"
        x[men, y[men]] += 1.5
        x[women, 8 + (y[women] % 8)] += 1.2
    elif shift == "label shift":
        women = (split == "train") & (sex == "F")
        k = int(women.sum())
        y[women] = np.where(rng.random(k) < 0.9, rng.integers(0, 3, k), rng.integers(3, 6, k))
        x[np.arange(n), y] += 1.0
        x[sex == "F", 15] += 3.0
    else:
        x[np.arange(n), y] += 1.2
    return x, y, split, sex


def _test_helper(relative: str):
    """A module of tests/ loaded from its file: putting tests/ on sys.path would make its ``benchmarks`` package
    shadow this folder's for every later import in the process."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tests" / relative
    spec = importlib.util.spec_from_file_location(f"_bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def simulate(trials: int, shift: str | None) -> dict:
    """Per intervention: the share of trials where it shrank |F1 gap| (or |EqOdds|) beyond noise."""
    from embedkit.heads.runner import ExperimentConfig, run_experiment
    from embedkit.heads.trained import HeadConfig
    from embedkit.metrics.compare import paired_changes, shrank_beyond_noise
    from embedkit.predictions import read_predictions
    from embedkit.runs import evaluate_predictions

    make_cache = _test_helper("heads/conftest.py").make_cache
    head = HeadConfig(epochs=40, lrs=(1e-2,), weight_decays=(1e-2,))
    hits = {m: {"f1_gap": 0, "eqodds": 0} for m in INTERVENTIONS}
    for t in range(trials):
        tmp = Path(tempfile.mkdtemp())
        x, y, split, sex = dataset(t, shift)
        cache = make_cache(tmp / "c.h5", x, y, split, sex=sex, classes=tuple("ABCDEF"))

        def result(mitigate=None):
            cfg = ExperimentConfig(model="synthetic", manifest=cache.with_suffix(".csv"), method="linear", cache=cache,
                                   runs_dir=tmp / "runs", dataset="sim", head=head, n_boot=10, mitigate=mitigate,
                                   attribute="sex" if mitigate else None)
            folder = run_experiment(cfg)[0].path
            return [evaluate_predictions(read_predictions(folder / "predictions.csv"), attributes="sex", n_boot=300,
                                         n_perm=10, seed=0, return_replicates=True)]

        erm = result()
        for m in INTERVENTIONS:
            change = paired_changes(erm, result(m), "sex")
            for gap in ("f1_gap", "eqodds"):
                hits[m][gap] += shrank_beyond_noise(change[f"|{gap}|"])
    return {m: {g: v / trials for g, v in h.items()} for m, h in hits.items()}


def reweighted_minority_share(trials: int) -> float:
    """Women's mean share of the total training weight under Kamiran & Calders' weights on the rare-group sets:
    reweighing keeps each group's marginal, so it stays the group's share of images (about 10 %)."""
    from embedkit.heads.mitigation import kamiran_calders

    shares = []
    for t in range(trials):
        x, y, split, sex = dataset(t, "rare group")
        train = split == "train"
        w = kamiran_calders(sex[train], y[train]).numpy()
        shares.append(w[sex[train] == "F"].sum() / w.sum())
    return float(np.mean(shares))
