"""Sufficient statistics: every metric derives from per-cell confusion matrices and calibration bins.

Working from counts lets one call evaluate 1,000 bootstrap or permutation replicates at once:
arrays carry a leading replicate axis ``B`` and a cell axis ``G`` (e.g. the four sex x age groups).
"""

from __future__ import annotations

import numpy as np

N_BINS = 15


def sums_by(values: np.ndarray, index: np.ndarray, size: int, chunk: int = 65_536) -> np.ndarray:
    """(size, K) float64 sums of the rows of ``values`` (N, K) per ``index`` (N,) in [0, size): rows sorted by
    index once, each run summed with ``add.reduceat`` (np.add.at is unbuffered and ~20x slower), ``chunk`` rows
    at a time so that no sorted copy of ``values`` is made."""
    out = np.zeros((size, values.shape[1]))
    order = np.argsort(index, kind="stable")
    for start in range(0, len(order), chunk):
        rows = order[start:start + chunk]
        at = index[rows]
        runs = np.flatnonzero(np.r_[True, at[1:] != at[:-1]])        # one run per index within a chunk
        out[at[runs]] += np.add.reduceat(np.asarray(values[rows], dtype=np.float64), runs, axis=0)
    return out


def confusion(y_true: np.ndarray, y_pred: np.ndarray, cells: np.ndarray, *, n_classes: int, n_cells: int) -> np.ndarray:
    """(B, G, C, C) counts, rows = true class, columns = predicted; inputs are (B, N) int arrays."""
    b = np.arange(y_true.shape[0])[:, None]
    code = ((b * n_cells + cells) * n_classes + y_true) * n_classes + y_pred
    size = y_true.shape[0] * n_cells * n_classes * n_classes
    return np.bincount(code.ravel(), minlength=size).reshape(-1, n_cells, n_classes, n_classes)


def calibration(conf: np.ndarray, correct: np.ndarray, cells: np.ndarray, *, n_cells: int, n_bins: int = N_BINS) -> np.ndarray:
    """(B, G, bins, 4) of [count, sum of confidence, sum of correct, sum of |confidence - correct|]
    over equal-width bins of [0, 1].

    Bin k holds confidences in (k/n, (k+1)/n]; a confidence of exactly 0 goes to the first bin.
    """
    bins = bin_of(conf, n_bins)
    b = np.arange(conf.shape[0])[:, None]
    code = ((b * n_cells + cells) * n_bins + bins).ravel()
    size = conf.shape[0] * n_cells * n_bins
    out = [np.bincount(code, weights=w.ravel(), minlength=size) for w in calibration_terms(conf, correct)]
    return np.stack(out, axis=-1).reshape(conf.shape[0], n_cells, n_bins, 4)


def calibration_terms(conf: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, ...]:
    """What a calibration bin sums per row: 1, the confidence, whether correct, |confidence - correct|."""
    return np.ones_like(conf), conf, correct, np.abs(conf - correct)


def bin_of(conf: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """The calibration bin of each confidence: (k/n, (k+1)/n] is bin k, exactly 0 the first."""
    return np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


class PatientSums:
    """Sums of each patient's rows over ``n_cols`` cells (confusion or calibration cells), kept as their nonzero
    entries: a patient holds one or a few images, so a handful of cells. A block of replicates' sums is then one
    compiled pass over the entries (``kernels``), not a (b, patients) x (patients, n_cols) product that is
    almost all zeros."""

    def __init__(self, patient: np.ndarray, col: np.ndarray, values: np.ndarray, n_cols: int):
        """Rows' ``patient`` and base ``col`` (N,), ``values`` (N, m): value j adds to cell col * m + j."""
        m = values.shape[1]
        key = ((patient.astype(np.int64) * (n_cols // m) + col)[:, None] * m + np.arange(m)).ravel()
        keys, at = np.unique(key, return_inverse=True)
        self.patient, self.col = keys // n_cols, keys % n_cols        # sorted by patient: counts read in order
        self.val = np.bincount(at.ravel(), weights=np.asarray(values, dtype=np.float64).ravel(), minlength=len(keys))
        self.n_cols = n_cols

    def weighted(self, counts: np.ndarray) -> np.ndarray:
        """(n_cols, b) sums of replicates drawing each patient ``counts`` (patients, b, C order) times."""
        from embedkit.metrics import kernels

        return kernels.patient_weighted(self.patient, self.col, self.val, counts, self.n_cols)

    def grouped(self, labels: np.ndarray, k: int, groups=None) -> np.ndarray:
        """(k * n_cols, b) sums per group when each patient's rows fall in the group ``labels`` (patients, b,
        C order) gives it (codes below k); only ``groups`` (default: all k) are summed, the others left 0."""
        from embedkit.metrics import kernels

        groups = np.arange(k) if groups is None else np.asarray(groups, dtype=np.int64)
        return kernels.patient_grouped(self.patient, self.col, self.val, labels, self.n_cols, k, groups)


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def accuracy_from(cm: np.ndarray) -> np.ndarray:
    """Accuracy of (..., C, C) confusion matrices; NaN for an empty one."""
    return _div(np.trace(cm, axis1=-2, axis2=-1).astype(float), cm.sum((-2, -1)).astype(float))


def f1_from(cm: np.ndarray, *, absent: str) -> np.ndarray:
    """Per-class F1 (..., C). ``absent="zero"``: sklearn's zero_division=0; ``"nan"``: undefined
    (NaN) for a class with no positives, as group-level metrics need."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(float)
    support, predicted = cm.sum(-1), cm.sum(-2)
    f1 = _div(2 * tp, support + predicted).astype(float)
    if absent == "zero":
        return np.nan_to_num(f1, nan=0.0)
    return np.where(support > 0, f1, np.nan)


def rates_from(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-vs-rest (TPR, FPR) per class, (..., C) each; NaN where undefined."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(float)
    support, predicted, n = cm.sum(-1), cm.sum(-2), cm.sum((-2, -1))[..., None]
    return _div(tp, support), _div(predicted - tp, n - support)


def ece_from(cal: np.ndarray) -> np.ndarray:
    """The paper's ECE (its Eq. 4, no bins): the mean over samples of |p_i - o_i|, with p_i the
    top-class probability and o_i = 1 when the top class is the true class, else 0."""
    return _div(cal[..., 3].sum(-1), cal[..., 0].sum(-1))


def ece_binned_from(cal: np.ndarray) -> np.ndarray:
    """The binned top-class ECE of (..., bins, 4) statistics: sum_k |acc_k - conf_k| n_k / n."""
    n = cal[..., 0].sum(-1)
    return _div(np.abs(cal[..., 2] - cal[..., 1]).sum(-1), n)
