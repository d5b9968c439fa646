"""Two-sample Kolmogorov–Smirnov test: do two groups' values come from one distribution? The audit applies it
to the leading principal components of the embeddings (Glocker et al., Radiology: AI 2023), where a difference
between groups of an attribute, within one finding, shows that the encoder separates them.

The p-value is the asymptotic Kolmogorov distribution of sqrt(n·m / (n + m))·D (scipy's ``kstwobign``),
accurate for the tens-to-thousands of images per group these tests compare.
"""

from __future__ import annotations

import numpy as np


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """sup |F_a − F_b| over the pooled values (ties handled: CDFs evaluated right-continuous)."""
    a, b = np.sort(np.asarray(a, dtype=np.float64)), np.sort(np.asarray(b, dtype=np.float64))
    pooled = np.concatenate([a, b])
    fa = np.searchsorted(a, pooled, side="right") / len(a)
    fb = np.searchsorted(b, pooled, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


def kolmogorov_sf(x: float) -> float:
    """P(K > x) for the Kolmogorov distribution K = sup |Brownian bridge|."""
    if x <= 0:
        return 1.0
    k = np.arange(1, 101)
    if x < 1.0:      # the theta-function form converges fast for small x
        cdf = np.sqrt(2 * np.pi) / x * np.sum(np.exp(-((2 * k - 1) ** 2) * np.pi ** 2 / (8 * x * x)))
        return float(min(max(1.0 - cdf, 0.0), 1.0))
    return float(min(max(2 * np.sum((-1.0) ** (k - 1) * np.exp(-2 * k * k * x * x)), 0.0), 1.0))


def ks_2samp(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(D, asymptotic two-sided p) of the two-sample KS test."""
    d = ks_statistic(a, b)
    n, m = len(a), len(b)
    return d, kolmogorov_sf(np.sqrt(n * m / (n + m)) * d)
