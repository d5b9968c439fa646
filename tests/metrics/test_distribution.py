"""The two-sample Kolmogorov–Smirnov test against scipy (statistic and the asymptotic Kolmogorov p-value)."""

import numpy as np
import pytest

from embedkit.metrics.distribution import kolmogorov_sf, ks_2samp


@pytest.mark.parametrize("n, m, shift", [(30, 40, 0.0), (200, 150, 0.3), (1000, 50, 0.1), (25, 25, 1.0)])
def test_ks_equals_scipy(n, m, shift):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(n)
    a, b = np.round(rng.normal(size=n), 1), np.round(rng.normal(shift, size=m), 1)    # ties included
    d, p = ks_2samp(a, b)
    assert d == pytest.approx(stats.ks_2samp(a, b).statistic)
    assert p == pytest.approx(stats.kstwobign.sf(np.sqrt(n * m / (n + m)) * d), rel=1e-9)


def test_kolmogorov_tail_on_both_branches():
    stats = pytest.importorskip("scipy.stats")
    for x in (0.0, 0.2, 0.5, 0.99, 1.0, 1.5, 3.0):
        assert kolmogorov_sf(x) == pytest.approx(stats.kstwobign.sf(x), rel=1e-9, abs=1e-15)


def test_same_distribution_rarely_rejects_and_a_shift_does():
    rng = np.random.default_rng(0)
    null = [ks_2samp(rng.normal(size=80), rng.normal(size=80))[1] for _ in range(400)]
    assert 0.02 < np.mean(np.array(null) < 0.05) < 0.08
    assert ks_2samp(rng.normal(size=300), rng.normal(0.5, size=300))[1] < 1e-4
