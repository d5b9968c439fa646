"""Fairness metrics on hand-computed arrays."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from embedkit.metrics import ece, ece_binned, ece_binned_gap, ece_gap, eqodds, f1_gap, var_f1
from embedkit.metrics.fairness import eqodds_terms, f1_gap_terms

Y = np.array([0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2])
P = np.array([0, 0, 1, 0, 2, 2, 0, 1, 1, 1, 0, 2])
G = np.array(["M"] * 6 + ["F"] * 6)


def test_var_f1_is_population_variance_of_sklearn_f1():
    f1 = f1_score(Y, P, average=None)
    assert var_f1(Y, P, n_classes=3) == pytest.approx(np.mean((f1 - f1.mean()) ** 2))


def test_f1_gap_signed_mean_of_class_differences():
    m = f1_score(Y[:6], P[:6], average=None)
    f = f1_score(Y[6:], P[6:], average=None)
    assert f1_gap(Y, P, groups=G, a="M", b="F", n_classes=3) == pytest.approx(np.mean(m - f))
    assert f1_gap(Y, P, groups=G, a="F", b="M", n_classes=3) == pytest.approx(np.mean(f - m))


def test_eqodds_by_hand():
    # M: TPR = [1, 1/2, 1]; FPR: c0 1/4, c1 0, c2 0.  F: TPR = [1/2, 1, 1/2]; FPR: c0 1/4, c1 1/4, c2 0
    expected = (abs(1 - 0.5) + abs(0.5 - 1) + abs(1 - 0.5) + 0 + abs(0 - 0.25) + 0) / 6
    assert eqodds(Y, P, groups=G, a="M", b="F", n_classes=3) == pytest.approx(expected)


def test_undefined_terms_are_excluded_and_counted():
    g = np.array(["A", "A", "A", "B", "B", "B"])
    y = np.array([0, 1, 2, 0, 0, 1])   # class 2 absent in B
    p = np.array([0, 1, 1, 0, 2, 1])
    gap, excluded = f1_gap_terms(y, p, groups=g, a="A", b="B", n_classes=3)
    # A: F1 = [1, 2/3, 0]; B: F1 = [2/3, 1, nan] -> mean of [1/3, -1/3]
    assert excluded == 1 and gap == pytest.approx(0.0)
    eo, n_excl = eqodds_terms(y, p, groups=g, a="A", b="B", n_classes=3)
    # TPR terms: c0 |1-1/2|, c1 0, c2 undefined; FPR (A vs B): c0 0, c1 |1/2-0|, c2 |0-1/3|
    assert n_excl == 1 and eo == pytest.approx((0.5 + 0 + 0 + 0.5 + 1 / 3) / 5)


def test_ece_gap_is_absolute_difference():
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(3), 12)
    expected = abs(ece(Y[:6], proba[:6]) - ece(Y[6:], proba[6:]))
    assert ece_gap(Y, proba, groups=G, a="M", b="F") == pytest.approx(expected)
    # by hand, the paper's Eq. 4: | mean_A |p - o| - mean_A' |p - o| |
    conf, correct = proba.max(1), (proba.argmax(1) == Y).astype(float)
    by_hand = abs(np.abs(conf[:6] - correct[:6]).mean() - np.abs(conf[6:] - correct[6:]).mean())
    assert ece_gap(Y, proba, groups=G, a="M", b="F") == pytest.approx(by_hand)
    binned = abs(ece_binned(Y[:6], proba[:6]) - ece_binned(Y[6:], proba[6:]))
    assert ece_binned_gap(Y, proba, groups=G, a="M", b="F") == pytest.approx(binned)
