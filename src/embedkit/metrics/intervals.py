"""Bootstrap confidence intervals, and the false-discovery control of a family of tests.

Intervals (95 %, from replicates and the point estimate):

- ``percentile``: [q2.5, q97.5] of the replicates;
- ``basic`` (reverse percentile): [2·est − q97.5, 2·est − q2.5]; it reflects the replicates' bias around the
  estimate, which is what an absolute or max − min gap needs: resampling only adds spread between groups,
  so the replicates of |gap| sit above the estimate and the percentile interval is shifted up (a point
  estimate outside its own CI, a null gap whose CI never reaches 0);
- ``bc`` (bias-corrected percentile): percentiles moved by z0 = Φ⁻¹(share of replicates below the estimate).

The default is ``basic`` (coverage on null and planted simulations: docs/fairness.md). Every interval is
clipped to the metric's range (a gap's magnitude is >= 0, rates <= 1) and widened, where needed, to contain
its estimate, so no reported interval excludes its own point estimate.
"""

from __future__ import annotations

import math

import numpy as np

METHODS = ("basic", "percentile", "bc")
DEFAULT = "basic"
LEVEL = 0.95


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _phi_inv(p: float) -> float:
    """Φ⁻¹ by bisection on erf (no scipy in the metrics floor); |error| < 1e-9."""
    lo, hi = -40.0, 40.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _phi(mid) < p else (lo, mid)
    return (lo + hi) / 2


Z = _phi_inv(1 - (1 - LEVEL) / 2)


def interval(replicates: np.ndarray, estimate: float, *, method: str = DEFAULT,
             bounds: tuple[float, float] = (-np.inf, np.inf), contain: bool = True) -> tuple[float, float]:
    """The 95 % interval of ``estimate`` from its bootstrap ``replicates``; (nan, nan) when undefined.
    ``contain=False`` returns the raw interval (the benchmark counts how often it misses the estimate)."""
    r = np.asarray(replicates, dtype=float)
    r = r[np.isfinite(r)]
    if not len(r) or not np.isfinite(estimate):
        return float("nan"), float("nan")
    a = (1 - LEVEL) / 2
    if method == "percentile":
        lo, hi = np.percentile(r, [100 * a, 100 * (1 - a)])
    elif method == "basic":
        q_lo, q_hi = np.percentile(r, [100 * a, 100 * (1 - a)])
        lo, hi = 2 * estimate - q_hi, 2 * estimate - q_lo
    elif method == "bc":
        share = (np.sum(r < estimate) + 0.5 * np.sum(r == estimate)) / len(r)
        z0 = _phi_inv(min(max(share, 0.5 / len(r)), 1 - 0.5 / len(r)))
        lo, hi = np.percentile(r, [100 * _phi(2 * z0 - Z), 100 * _phi(2 * z0 + Z)])
    else:
        raise ValueError(f"unknown interval method {method!r}: choose {', '.join(METHODS)}")
    lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    if not contain:
        return float(lo), float(hi)
    return float(min(lo, estimate)), float(max(hi, estimate))


ADJUSTMENTS = ("bh", "holm")


def adjust(p_values, method: str = "bh") -> list[float | None]:
    """Adjusted p-values (q) of a family, in input order; None stays None and is not counted.

    ``bh``: Benjamini–Hochberg (false discovery rate), q_(i) = min_{j >= i} m·p_(j)/j;
    ``holm``: Holm–Bonferroni (family-wise error), q_(i) = max_{j <= i} (m − j + 1)·p_(j)."""
    p = [None if v is None or not np.isfinite(v) else float(v) for v in p_values]
    index = [i for i, v in enumerate(p) if v is not None]
    m = len(index)
    out: list[float | None] = [None] * len(p)
    if not m:
        return out
    order = sorted(index, key=lambda i: p[i])
    ranked = np.array([p[i] for i in order])
    if method == "bh":
        q = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
    elif method == "holm":
        q = np.maximum.accumulate(ranked * (m - np.arange(m)))
    else:
        raise ValueError(f"unknown adjustment {method!r}: choose {', '.join(ADJUSTMENTS)}")
    for i, v in zip(order, np.minimum(q, 1.0)):
        out[i] = float(v)
    return out
