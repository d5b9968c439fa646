"""Paired changes of an intervention against ERM: the bootstrap p-value agrees with the interval it is dual to,
and a family of changes is judged on adjusted p."""

from __future__ import annotations

import numpy as np
import pytest

from embedkit.metrics.compare import p_value, shrank_beyond_noise, widened_beyond_noise
from embedkit.metrics.intervals import interval


@pytest.mark.parametrize("centre", [-0.08, -0.04, -0.02, 0.0, 0.03, 0.06])
def test_the_p_value_is_below_alpha_exactly_when_the_basic_interval_excludes_zero(centre):
    rng = np.random.default_rng(7)
    for _ in range(20):
        change = centre + rng.normal(0, 0.01)
        replicates = change + rng.normal(0, 0.02, 4000)
        lo, hi = interval(replicates, change)
        p = p_value(replicates, change)
        if abs(p - 0.05) > 0.004:                        # away from the edge, where quantile interpolation differs
            assert (p < 0.05) == (lo > 0 or hi < 0), (change, p, lo, hi)


def test_a_change_is_judged_on_its_adjusted_p():
    change = {"change": -0.05, "ci": [-0.09, -0.01], "p": 0.01}
    assert shrank_beyond_noise(change) and not widened_beyond_noise(change)
    assert not shrank_beyond_noise(change, q=0.2)                     # the same p, adjusted over a family
    assert widened_beyond_noise({"change": 0.05, "ci": [0.01, 0.09], "p": 0.01})
    assert not shrank_beyond_noise({"change": None, "ci": [None, None], "p": None})
    assert p_value(np.full(99, 0.3), 0.1) == pytest.approx(2 / 100)     # every replicate on one side: never 0
