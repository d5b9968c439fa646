"""An intervention against its baseline on the same test images: paired bootstrap differences.

Both runs are evaluated with the same seed on the same rows, so their bootstrap resamples are the same
patients (``suite.evaluate`` draws them from the rows' patients, classes and the seed alone);
the difference of each replicate pair gives the CI of the change (``intervals.DEFAULT``, like every other
interval, containing the observed change). Several seeds pool their replicate differences, as
``aggregate_seeds`` pools CIs. A gap shrank beyond noise when the whole 95 % CI of the change in |gap| lies
below 0 (a one-sided 2.5 % test)."""

from __future__ import annotations

import numpy as np

from embedkit.metrics.intervals import interval
from embedkit.metrics.suite import clean

UTILITY = ("accuracy", "f1_macro")
GAPS = ("f1_gap", "eqodds", "ece_gap")


def paired_changes(base: list[dict], other: list[dict], attribute: str) -> dict:
    """From ``evaluate(..., return_replicates=True)`` results, seed by seed on the same rows and seeds:
    per utility metric the change (other - base), per gap the change in |gap|, with the paired 95 % CI."""
    out = {}
    keys = [(k, k, False) for k in UTILITY] + [(f"|{g}|", f"fairness/{attribute}/{g}", True) for g in GAPS]
    for name, path, absolute in keys:
        diffs, observed = [], []
        for a, b in zip(base, other):
            ra, rb = a["_replicates"][path], b["_replicates"][path]
            diffs.append(np.abs(rb) - np.abs(ra) if absolute else rb - ra)
            observed.append(_value(b, path, absolute) - _value(a, path, absolute))
        change = np.nanmean(observed) if np.isfinite(observed).any() else np.nan
        ci = interval(np.concatenate(diffs), change, bounds=(-1.0, 1.0))
        out[name] = {"change": clean(change), "ci": [clean(ci[0]), clean(ci[1])]}
    return out


def shrank_beyond_noise(change: dict) -> bool:
    """The gap's change has its whole CI below 0."""
    hi = change["ci"][1]
    return hi is not None and hi < 0


def _value(result: dict, path: str, absolute: bool) -> float:
    node = result
    for part in path.split("/"):
        node = node[part]
    if node is None:
        return np.nan
    return abs(node) if absolute else node
