import numpy as np
import pytest


@pytest.mark.parametrize("chunk", [1, 7, 65_536])
def test_sums_by_equals_unbuffered_add_at_whatever_the_chunk(chunk):
    """Runs that cross chunk boundaries add up; indices that never occur stay 0; float32 rows sum in float64."""
    from embedkit.metrics.stats import sums_by

    rng = np.random.default_rng(0)
    values = rng.normal(size=(500, 3)).astype(np.float32)
    index = rng.integers(0, 40, 500) * 2                      # odd indices never occur
    expected = np.zeros((80, 3))
    np.add.at(expected, index, values.astype(np.float64))
    got = sums_by(values, index, 80, chunk=chunk)
    assert got.dtype == np.float64 and np.allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert not got[1::2].any()
    assert sums_by(values[:0], index[:0], 4).shape == (4, 3)
