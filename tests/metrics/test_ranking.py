"""One finding's ranking metrics under replicate weights and permuted group labels, each held to
scikit-learn on the rows the replicate stands for."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from embedkit.metrics import kernels
from embedkit.metrics.ranking import MASKED_GROUPS, Ranked


def _rows(n, prevalence, decimals, seed=3):
    rng = np.random.default_rng(seed)
    return (rng.random(n) < prevalence).astype(float), rng.random(n).round(decimals), rng


@pytest.mark.parametrize("prevalence, decimals", [(0.4, 1), (0.8, 1), (0.1, 6), (0.7, 6)])
def test_weighted_auroc_is_the_auroc_of_the_drawn_rows(prevalence, decimals):
    """A bootstrap replicate's weights give exactly the AUROC and AP of the rows it draws — with ties and
    without, over every row and within each group of two attributes."""
    y, s, rng = _rows(120, prevalence, decimals)
    sex, site = rng.integers(0, 2, 120), rng.integers(0, 3, 120)
    slots = np.stack([1 + sex, 3 + site], 1)                       # slots 1-2: sex, 3-5: site
    counts = rng.integers(0, 3, (5, 120))
    auroc, ap = Ranked(y, s, slots=slots, n_slots=5).weighted(np.ascontiguousarray(counts.T, dtype=np.uint8))
    for b, w in enumerate(counts):
        rows = np.repeat(np.arange(120), w)
        assert auroc[b, 0] == pytest.approx(roc_auc_score(y[rows], s[rows]), abs=1e-12)
        assert ap[b] == pytest.approx(average_precision_score(y[rows], s[rows]), abs=1e-12)
        for slot in range(1, 6):
            drawn = rows[(slots[rows] == slot).any(1)]
            if len(set(y[drawn])) < 2:
                assert np.isnan(auroc[b, slot])                   # a group drawn without both classes
            else:
                assert auroc[b, slot] == pytest.approx(roc_auc_score(y[drawn], s[drawn]), abs=1e-12)


def test_weights_are_read_per_patient():
    """Rows of one patient share its weight column: drawing the patient twice counts all its images twice."""
    y, s, rng = _rows(60, 0.4, 2)
    patient = rng.integers(0, 25, 60)
    counts = rng.integers(0, 3, (3, 25))
    auroc, _ = Ranked(y, s, patient).weighted(np.ascontiguousarray(counts.T, dtype=np.uint8))
    for b, w in enumerate(counts):
        rows = np.repeat(np.arange(60), w[patient])
        assert auroc[b, 0] == pytest.approx(roc_auc_score(y[rows], s[rows]), abs=1e-12)


@pytest.mark.parametrize("prevalence, decimals", [(0.3, 1), (0.3, 6), (0.7, 1), (0.7, 6)])
@pytest.mark.parametrize("k, groups", [(3, None), (3, [0, 2]), (MASKED_GROUPS + 2, None)])
def test_permuted_auroc_is_each_relabelled_groups_auroc(prevalence, decimals, k, groups):
    """With ties and without, whichever class is the smaller (the pass walks the other way round then), for the
    groups asked for (the others NaN), few groups (masked pass) or many (scattered pass)."""
    y, s, rng = _rows(150, prevalence, decimals)
    patient = rng.integers(0, 70, 150)
    labels = rng.integers(0, k + 1, (70, 6)).astype(np.uint8)    # k + 1 labels, the last belonging to no group
    auroc = Ranked(y, s, patient).permuted(labels, k, groups)
    for b in range(6):
        group = labels[patient, b]
        for g in range(k):
            if groups is not None and g not in groups:
                assert np.isnan(auroc[b, g])
            elif len(set(y[group == g])) < 2:
                assert np.isnan(auroc[b, g])
            else:
                assert auroc[b, g] == pytest.approx(roc_auc_score(y[group == g], s[group == g]), abs=1e-12)


@pytest.mark.parametrize("dtype", [np.uint8, np.int64])
def test_the_masked_and_scattered_passes_give_the_same_sums(dtype):
    """Exactly the same U, T, P, N from both permutation passes, on tied scores, in either label dtype."""
    y, s, rng = _rows(400, 0.2, 1)
    patient = rng.integers(0, 150, 400)
    labels = rng.integers(0, 5, (150, 13)).astype(dtype)
    walk = Ranked(y, s, patient).perm_walk
    scattered = kernels.permuted(*walk, labels, 4)
    masked = kernels.permuted_masked(*walk, labels, 4, np.arange(4, dtype=dtype))
    for a, b in zip(scattered, masked):
        np.testing.assert_array_equal(a, b)


def test_auroc_is_undefined_without_both_classes():
    y, s = np.array([1.0, 1, 0, 0]), np.array([0.9, 0.2, 0.5, 0.1])
    weights = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0]], dtype=np.uint8)   # positives only, negatives only, both
    auroc, ap = Ranked(y, s).weighted(np.ascontiguousarray(weights.T))
    assert np.isnan(auroc[:2, 0]).all() and auroc[2, 0] == 1.0
    assert np.isnan(ap[1]) and ap[0] == 1.0 and ap[2] == 1.0
    assert np.isnan(Ranked(np.ones(3), np.arange(3.0)).weighted(np.ones((3, 1), np.uint8))[0][0, 0])
