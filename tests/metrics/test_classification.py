"""Utility metrics against scikit-learn and hand-computed arrays."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from embedkit.metrics import accuracy, ece, ece_binned, f1_per_class, rates_per_class


@pytest.mark.parametrize("seed", range(5))
def test_accuracy_and_f1_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y, p = rng.integers(0, 5, 60), rng.integers(0, 5, 60)
    p[:3] = 4  # class 4 predicted, possibly absent from y in some seeds
    assert accuracy(y, p) == pytest.approx(accuracy_score(y, p))
    expected = f1_score(y, p, labels=range(6), average=None, zero_division=0)
    np.testing.assert_allclose(f1_per_class(y, p, n_classes=6), expected)


def test_absent_class_is_nan_when_asked():
    y, p = np.array([0, 0, 1]), np.array([0, 2, 1])
    f1 = f1_per_class(y, p, n_classes=3, absent="nan")
    assert f1[0] == pytest.approx(2 / 3) and f1[1] == 1.0 and np.isnan(f1[2])


def test_rates_by_hand():
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 1, 0, 1, 0, 2])
    tpr, fpr = rates_per_class(y, p, n_classes=3)
    np.testing.assert_allclose(tpr, [2 / 3, 1 / 2, 1])
    np.testing.assert_allclose(fpr, [1 / 3, 1 / 4, 0])
    # single-class group: no negatives, FPR undefined
    tpr, fpr = rates_per_class(np.array([1, 1]), np.array([1, 0]), n_classes=2)
    assert np.isnan(tpr[0]) and tpr[1] == 0.5 and np.isnan(fpr[1]) and fpr[0] == 0.5


def test_paper_ece_is_the_unbinned_mean_gap_between_confidence_and_correctness():
    # Eq. 4: mean |p_i - o_i|; here |1-1|, |0.9-0|, |0.5-1|, |0.5-0|
    proba = np.array([[1.0, 0.0], [0.9, 0.1], [0.5, 0.5], [0.5, 0.5]])
    y = np.array([0, 1, 0, 1])
    assert ece(y, proba) == pytest.approx((0 + 0.9 + 0.5 + 0.5) / 4)
    # calibrated random predictions (labels drawn from the probabilities): the binned ECE is near 0,
    # the paper's is not — the two definitions differ several-fold, so each must be named
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(6), 2000)
    yy = np.array([rng.choice(6, p=row) for row in p])
    assert ece(yy, p) > 5 * ece_binned(yy, p)


def test_binned_ece_by_hand_with_empty_bins_and_edges():
    # confidences 1.0 (last bin), 0.9 (bin 13: (13/15, 14/15]), 0.5 twice (bin 7)
    proba = np.array([[1.0, 0.0], [0.9, 0.1], [0.5, 0.5], [0.5, 0.5]])
    y = np.array([0, 1, 0, 1])  # argmax ties go to class 0: correct, wrong, correct, wrong
    expected = (abs(1 - 1.0) * 1 + abs(0 - 0.9) * 1 + abs(0.5 - 0.5) * 2) / 4
    assert ece_binned(y, proba) == pytest.approx(expected)
    # a confidence exactly on a bin edge (1/3 = 5/15) falls in the lower bin (5/15 is its upper edge)
    p3 = np.full((2, 3), 1 / 3)
    assert ece_binned(np.array([0, 1]), p3) == pytest.approx(abs(0.5 - 1 / 3))
