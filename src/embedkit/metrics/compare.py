"""An intervention against its baseline on the same test images: paired bootstrap differences.

Both runs are evaluated with the same seed on the same rows, so their bootstrap resamples are the same
patients (``suite.evaluate`` draws them from the rows' patients, classes and the seed alone);
the difference of each replicate pair gives the CI of the change (``intervals.DEFAULT``, like every other
interval, containing the observed change). Several seeds pool their replicate differences, as
``aggregate_seeds`` pools CIs. Each change has the two-sided bootstrap p-value of "no change" dual to that interval
(the level at which it first reaches 0); a |gap| shrank beyond noise when its change is below 0 with p — adjusted
over the comparisons made beside it (``q``) — under ALPHA, which for one comparison is the 95 % CI excluding 0."""

from __future__ import annotations

import numpy as np

from embedkit.metrics.intervals import interval
from embedkit.metrics.suite import ALPHA, clean

UTILITY = ("accuracy", "f1_macro")
GAPS = ("f1_gap", "eqodds", "ece_gap")


def paired_changes(base: list[dict], other: list[dict], attribute: str, *, utility: tuple[str, ...] = UTILITY,
                   gaps: tuple[str, ...] = GAPS) -> dict:
    """From ``evaluate(..., return_replicates=True)`` results (or ``evaluate_findings``', with its metric names:
    ``auroc_macro``, ``underdiagnosis_gap``, ``auroc_gap/<F>``), seed by seed on the same rows and seeds: per
    utility metric the change (other - base), per gap the change in |gap| (``|gap|``), with the paired 95 % CI."""
    out = {}
    keys = [(k, k, False) for k in utility] + [(f"|{g}|", f"fairness/{attribute}/{g}", True) for g in gaps]
    for name, path, absolute in keys:
        diffs, observed = [], []
        for a, b in zip(base, other):
            ra, rb = a["_replicates"][path], b["_replicates"][path]
            diffs.append(np.abs(rb) - np.abs(ra) if absolute else rb - ra)
            observed.append(_value(b, path, absolute) - _value(a, path, absolute))
        change = np.nanmean(observed) if np.isfinite(observed).any() else np.nan
        ci = interval(np.concatenate(diffs), change, bounds=(-1.0, 1.0))
        out[name] = {"change": clean(change), "ci": [clean(ci[0]), clean(ci[1])],
                     "p": p_value(np.concatenate(diffs), change)}
    return out


def p_value(replicates: np.ndarray, change: float) -> float | None:
    """Two-sided bootstrap p of no change, dual to the basic interval [2c - Q(1 - a/2), 2c - Q(a/2)]: it excludes 0
    exactly when fewer than a/2 of the replicates lie on one side of 2c (counted as (k + 1) / (n + 1), never 0)."""
    r = np.asarray(replicates, dtype=float)
    r = r[np.isfinite(r)]
    if not len(r) or not np.isfinite(change):
        return None
    ties = 0.5 * np.sum(r == 2 * change)
    below, above = np.sum(r < 2 * change) + ties, np.sum(r > 2 * change) + ties
    return float(min(1.0, 2 * (min(below, above) + 1) / (len(r) + 1)))


def shrank_beyond_noise(change: dict, q: float | None = None) -> bool:
    """The |gap| fell beyond noise: its change is below 0 with ``q`` (its p adjusted over the comparisons made beside
    it; alone, its p) under ALPHA."""
    return _beyond(change, q) and change["change"] < 0


def widened_beyond_noise(change: dict, q: float | None = None) -> bool:
    """The |gap| grew beyond noise (as ``shrank_beyond_noise``, above 0)."""
    return _beyond(change, q) and change["change"] > 0


def _beyond(change: dict, q: float | None) -> bool:
    q = change.get("p") if q is None else q
    return q is not None and change["change"] is not None and q < ALPHA


def _value(result: dict, path: str, absolute: bool) -> float:
    node = result
    for part in path.split("/"):
        node = node[part]
    if node is None:
        return np.nan
    return abs(node) if absolute else node
