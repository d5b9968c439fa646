"""Every metric of one run, for any declared attributes, with bootstrap CIs, permutation p-values and
the noise floor.

All statistics come from per-group confusion matrices and calibration bins (``stats``), summed per
patient once, so the observed values, 1,000 bootstrap resamples of patients and 1,000 permutations of
each attribute's group labels between patients (``resample``: strata by class alone, so declaring
another attribute changes no other number) are computed the same way, as counts x statistics in blocks.
Attributes are data, like fairlearn's ``sensitive_features``: ``groups`` maps a name to one label per
row ('' = missing), ``order`` to the groups' declared order.

Conventions (also in the report): predictions are the argmax of the probabilities (ties go to the
lower class index); ``ece`` is the paper's Eq. 4 (mean |p_i - o_i| of the top-class probability, no
bins) and ``ece_binned`` the 15-bin top-class ECE. Two groups A, A' (declared order): f1_gap is the
signed mean over classes of F1_A - F1_A', eqodds the mean of |TPR_A - TPR_A'| and |FPR_A - FPR_A'|
over classes, ece_gap |ECE_A - ECE_A'|. More than two: f1_gap = max - min over groups of the group
macro-F1, eqodds the mean over classes of (max - min TPR) and (max - min FPR), ece_gap max - min of
the group ECE; terms undefined in a group are left out (counted under ``excluded``). Groups with fewer
than ``min_group`` rows are reported but left out of the gaps. The noise floor is the median |gap|
under the permutation null; a gap is significant when its CI excludes 0 and its p < 0.05. Intervals
are ``intervals.DEFAULT`` (the basic bootstrap), clipped to the metric's range and always containing
the estimate.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Mapping

import numpy as np

from embedkit.metrics import intervals, resample, stats

GAPS = ("f1_gap", "eqodds", "ece_gap", "ece_binned_gap")
MIN_GROUP = 10
ALPHA = 0.05
N_BOOT = 1000         # bootstrap replicates (patients resampled)
N_PERM = 1000         # permutations of the group labels (per patient)
STATS_VERSION = 3     # 2: patient-level design stratified by class alone, basic intervals; 3: q over a run's gaps decides
#                       significance. A change re-scores runs


@contextmanager
def quiet():
    """Silence 'mean of empty slice' warnings: an all-NaN mean is NaN by design."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _two_group_gaps(cm: np.ndarray, cal: np.ndarray) -> dict[str, np.ndarray]:
    """Gaps between groups 0 and 1 of (B, 2, ...) statistics, signed first - second for F1."""
    f1_diff = stats.f1_from(cm[:, 0], absent="nan") - stats.f1_from(cm[:, 1], absent="nan")
    (tpr_a, fpr_a), (tpr_b, fpr_b) = stats.rates_from(cm[:, 0]), stats.rates_from(cm[:, 1])
    terms = np.concatenate([np.abs(tpr_a - tpr_b), np.abs(fpr_a - fpr_b)], axis=-1)
    return {"f1_gap": np.nanmean(f1_diff, -1), "eqodds": np.nanmean(terms, -1),
            "ece_gap": np.abs(stats.ece_from(cal[:, 0]) - stats.ece_from(cal[:, 1])),
            "ece_binned_gap": np.abs(stats.ece_binned_from(cal[:, 0]) - stats.ece_binned_from(cal[:, 1])),
            "excluded/f1_gap": np.isnan(f1_diff).sum(-1).astype(float),
            "excluded/eqodds": np.isnan(terms).sum(-1).astype(float)}


def _spread(values: np.ndarray, axis: int) -> np.ndarray:
    """max - min over ``axis`` of the defined values; NaN where fewer than two are defined."""
    defined = np.isfinite(values).sum(axis)
    return np.where(defined >= 2, np.nanmax(values, axis) - np.nanmin(values, axis), np.nan)


def _k_group_gaps(cm: np.ndarray, cal: np.ndarray) -> dict[str, np.ndarray]:
    """Gaps over k > 2 groups of (B, k, ...) statistics: max - min."""
    f1 = np.nanmean(stats.f1_from(cm, absent="nan"), -1)                       # (B, k) group macro-F1
    tpr, fpr = stats.rates_from(cm)                                             # (B, k, C)
    terms = np.concatenate([_spread(tpr, 1), _spread(fpr, 1)], axis=-1)         # (B, 2C)
    return {"f1_gap": _spread(f1, 1), "eqodds": np.nanmean(terms, -1),
            "ece_gap": _spread(stats.ece_from(cal), 1), "ece_binned_gap": _spread(stats.ece_binned_from(cal), 1),
            "excluded/f1_gap": (~np.isfinite(f1)).sum(-1).astype(float),
            "excluded/eqodds": np.isnan(terms).sum(-1).astype(float)}


def summarise(cms: dict[str, np.ndarray], cals: dict[str, np.ndarray], classes: tuple[str, ...],
              order: Mapping[str, tuple[str, ...]], eligible: Mapping[str, list[int]]) -> dict[str, np.ndarray]:
    """Flat ``{"path/to/metric": (B,) array}`` from per-attribute (B, k+1, C, C) confusions and
    (B, k+1, bins, 4) calibration statistics (the last cell holds rows missing that attribute)."""
    out: dict[str, np.ndarray] = {}
    any_attr = next(iter(cms))
    total, total_cal = cms[any_attr].sum(1), cals[any_attr].sum(1)
    f1 = stats.f1_from(total, absent="zero")
    out["n"] = total.sum((-2, -1)).astype(float)
    out["accuracy"] = stats.accuracy_from(total)
    out["f1_macro"] = f1.mean(-1)
    out["var_f1"] = f1.var(-1)
    out["ece"] = stats.ece_from(total_cal)
    out["ece_binned"] = stats.ece_binned_from(total_cal)
    for c, name in enumerate(classes):
        out[f"f1/{name}"] = f1[:, c]
    with quiet():
        for attr in cms:
            out.update(_attribute_metrics(attr, cms[attr], cals[attr], order[attr], eligible[attr]))
    return out


def _attribute_metrics(attr: str, cm: np.ndarray, cal: np.ndarray, order: tuple[str, ...], keep: list[int]) -> dict:
    out = {}
    for i, g in enumerate(order):
        out[f"groups/{attr}/{g}/n"] = cm[:, i].sum((-2, -1)).astype(float)
        out[f"groups/{attr}/{g}/accuracy"] = stats.accuracy_from(cm[:, i])
        out[f"groups/{attr}/{g}/f1_macro"] = np.nanmean(stats.f1_from(cm[:, i], absent="nan"), -1)
        out[f"groups/{attr}/{g}/ece"] = stats.ece_from(cal[:, i])
        out[f"groups/{attr}/{g}/ece_binned"] = stats.ece_binned_from(cal[:, i])
    if len(keep) < 2:
        gaps = {k: np.full(cm.shape[0], np.nan) for k in (*GAPS, "excluded/f1_gap", "excluded/eqodds")}
    else:
        gaps = (_two_group_gaps if len(keep) == 2 else _k_group_gaps)(cm[:, keep], cal[:, keep])
    out.update({f"fairness/{attr}/{k}": v for k, v in gaps.items()})
    return out


def significant(ci: list, p_value: float | None) -> bool:
    """A gap counts only when its CI excludes 0 *and* its permutation p-value (adjusted over its family: q) is
    below ALPHA.

    The CI alone is not enough: eqodds and ece_gap are absolute values whose CI never includes 0,
    and on 240 test images the percentile bootstrap CI of the signed f1_gap excludes 0 in about
    10-12 % of simulations without any true difference (nominal 5 %), while the within-class
    permutation test holds its level (tests/metrics/test_evaluate.py)."""
    return bool(p_value is not None and ci[0] is not None and (ci[0] > 0 or ci[1] < 0) and p_value < ALPHA)


def nest(flat: dict[str, object]) -> dict:
    """``{"a/b": v}`` -> ``{"a": {"b": v}}``."""
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def clean(x: float | None) -> float | None:
    """A JSON-ready number: None for None, NaN or infinity."""
    return None if x is None or not np.isfinite(x) else float(x)


def gap_tests(observed: Mapping[str, float], perm: Mapping[str, np.ndarray], gaps: list[str],
              n_perm: int) -> tuple[dict, dict]:
    """Each gap's noise floor (median |gap| under the permutation null) and permutation p-value
    (1 + #{|null| >= |observed|}) / (1 + n_perm); NaN and None without permutations."""
    with quiet():
        null = {k: perm.get(k, np.zeros(0)) for k in gaps}
        floor = {k: float(np.nanmedian(np.abs(null[k]))) if np.isfinite(null[k]).any() else np.nan for k in gaps}
        p = {k: float((1 + np.sum(np.abs(null[k]) >= abs(observed[k]) - 1e-12)) / (1 + n_perm))
             if np.isfinite(observed[k]) and n_perm else None for k in gaps}
    return floor, p


def gap_sections(observed: Mapping[str, float], ci: Mapping[str, list], floor: dict, p: dict, gaps: list[str]) -> dict:
    """A result's null, excess, p_value, q_value and significant sections, keyed without "fairness/". ``q`` is p
    adjusted (Benjamini–Hochberg) over the gaps this one evaluation tests, its family: a gap is significant when
    its CI excludes 0 and q < ALPHA (the report adjusts again over all of its runs' gaps)."""
    short = {k: k.removeprefix("fairness/") for k in gaps}
    q = dict(zip(gaps, intervals.adjust([p[k] for k in gaps], "bh")))
    return {"null": nest({short[k]: clean(floor[k]) for k in gaps}),
            "excess": nest({short[k]: clean(abs(observed[k]) - floor[k]) for k in gaps}),
            "p_value": nest({short[k]: p[k] for k in gaps}),
            "q_value": nest({short[k]: q[k] for k in gaps}),
            "significant": nest({short[k]: significant(ci[k], q[k]) for k in gaps})}


class _Data:
    """One run's rows reduced once to per-patient sufficient statistics: for each attribute the
    (group, class, prediction) counts and calibration sums of every patient, and the same without the
    group for the permutation null, as their nonzero entries (``stats.PatientSums``). A replicate is then
    counts over patients times these statistics."""

    def __init__(self, y_true, proba, groups: Mapping[str, np.ndarray], order, n_classes: int, patient_id=None):
        self.y_true = np.asarray(y_true, dtype=np.int64)
        proba = np.asarray(proba, dtype=float)
        self.y_pred = proba.argmax(1)
        self.conf, self.correct = proba.max(1), (self.y_pred == self.y_true).astype(float)
        self.order = {a: tuple(order[a]) if order and a in order else present_groups(groups[a]) for a in groups}
        self.codes = {a: group_codes(np.asarray(groups[a]).astype(str), self.order[a]) for a in groups}
        self.C = n_classes
        self.clusters = resample.Clusters(patient_id, self.y_true, n_classes)
        self.cells = {a: self._patient_stats(codes, len(self.order[a]) + 1) for a, codes in self.codes.items()}
        self.plain = self._patient_stats(np.zeros_like(self.y_true), 1)

    def _patient_stats(self, cells: np.ndarray, k: int) -> tuple[stats.PatientSums, stats.PatientSums]:
        """Each patient's (k, C, C) confusion counts and (k, bins, 4) calibration sums: ``stats``' counts with
        every (patient, group) pair as one cell."""
        C, B, patient = self.C, stats.N_BINS, self.clusters.patient
        cm = stats.PatientSums(patient, (cells * C + self.y_true) * C + self.y_pred, np.ones((len(cells), 1)), k * C * C)
        terms = np.stack(stats.calibration_terms(self.conf, self.correct), 1)
        cal = stats.PatientSums(patient, cells * B + stats.bin_of(self.conf), terms, k * B * 4)
        return cm, cal

    def stats(self, counts: np.ndarray, only: str | None = None):
        """Per-attribute (b, k, C, C) confusions and (b, k, bins, 4) calibration sums of replicates that
        draw each patient ``counts`` (b, P) times (``only``: that attribute alone)."""
        cms, cals = {}, {}
        columns = np.ascontiguousarray(counts.T)                # replicates as columns: the kernels' layout
        for a, (cm, cal) in self.cells.items():
            if only is None or a == only:
                k = len(self.order[a]) + 1
                cms[a] = cm.weighted(columns).T.reshape(-1, k, self.C, self.C)
                cals[a] = cal.weighted(columns).T.reshape(-1, k, stats.N_BINS, 4)
        return cms, cals

    def permuted(self, attr: str, labels: np.ndarray, keep: list[int]):
        """Statistics of ``attr`` when each patient's images carry the group ``labels`` (b, P) give it: of the
        groups its gaps compare (``keep``) alone, the others left 0 (a permutation's null holds only gaps)."""
        k = len(self.order[attr]) + 1
        cm, cal = self.plain
        columns = np.ascontiguousarray(labels.T)
        return ({attr: cm.grouped(columns, k, keep).T.reshape(-1, k, self.C, self.C)},
                {attr: cal.grouped(columns, k, keep).T.reshape(-1, k, stats.N_BINS, 4)})


def present_groups(labels) -> tuple[str, ...]:
    return tuple(sorted(set(np.asarray(labels).astype(str).tolist()) - {""}))


def group_codes(labels: np.ndarray, order: tuple[str, ...]) -> np.ndarray:
    """Group index per row; rows missing the attribute (or in an undeclared group) get the last cell."""
    index = {g: i for i, g in enumerate(order)}
    return np.array([index.get(v, len(order)) for v in labels], dtype=np.int64)


def _stacked(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def evaluate(y_true: np.ndarray, proba: np.ndarray, *, groups: Mapping[str, np.ndarray], classes: tuple[str, ...],
             order: Mapping[str, tuple[str, ...]] | None = None, patient_id=None, min_group: int = MIN_GROUP,
             n_boot: int = N_BOOT, n_perm: int = N_PERM, seed: int = 0, return_replicates: bool = False,
             interval: str = intervals.DEFAULT, threads: int | None = None) -> dict:
    """All utility and fairness metrics of one run as a JSON-ready dict (see module docstring).

    ``patient_id`` (one per row) makes the patient the unit of resampling; without it each row is its own;
    ``threads`` blocks of replicates run at once (the same numbers; None: a core each where there are several).
    Keys: n, accuracy, f1, f1_macro, var_f1, ece, ece_binned, groups, fairness (one entry per
    attribute), excluded, ci (same nesting, [low, high]), null (noise floor), excess, p_value,
    significant, settings (per attribute: group order, sign, groups left out as too small; the design).
    """
    if not groups:
        groups = {"all": np.full(len(y_true), "all")}
    data = _Data(y_true, proba, groups, order, len(classes), patient_id)
    counts = {a: np.bincount(data.codes[a], minlength=len(data.order[a]) + 1) for a in groups}
    eligible = {a: [i for i in range(len(data.order[a])) if counts[a][i] >= min_group] for a in groups}
    small = {a: [g for i, g in enumerate(data.order[a]) if i not in eligible[a]] for a in groups}
    for a, gs in small.items():
        if gs:
            warnings.warn(f"attribute {a}: group(s) {', '.join(gs)} have fewer than {min_group} rows; "
                          "reported but left out of the gaps", stacklevel=2)
    summary = lambda cms_cals: summarise(*cms_cals, classes, data.order, eligible)  # noqa: E731
    rng = np.random.default_rng(seed)
    clusters = data.clusters

    observed = {k: v[0] for k, v in summary(data.stats(np.ones((1, clusters.n)))).items()}
    boot = _stacked(resample.map_blocks(lambda c: summary(data.stats(c)), clusters.bootstrap_counts(n_boot, rng),
                                        threads))
    perm = {}
    for a in groups:  # each attribute's null: its patients' labels shuffled within stratum, the others as observed
        labels = clusters.patient_labels(data.codes[a], len(data.order[a]) + 1)
        parts = resample.map_blocks(lambda lab: summary(data.permuted(a, lab, eligible[a])),
                                    clusters.permuted_labels(labels, n_perm, rng), threads)
        perm.update({k: v for k, v in _stacked(parts).items() if k.startswith(f"fairness/{a}/")})
    design = {"unit": "patient" if patient_id is not None else "image", "patients": clusters.n,
              "strata": "class (patients with images of several classes: one mixed stratum)", "interval": interval}
    return _result(observed, boot, perm, data, small, eligible, min_group, n_boot, n_perm, seed, design,
                   return_replicates)


def _bounds(key: str, signed: set[str]) -> tuple[float, float]:
    """The range of a metric: signed two-group F1 gaps in [-1, 1], every other metric in [0, 1]."""
    return (-1.0, 1.0) if key in signed else (0.0, 1.0)


def _intervals(boot: dict, estimates: Mapping[str, float], signed: set[str], method: str) -> dict:
    keys = [k for k in estimates if k != "n" and "/excluded/" not in k and not k.endswith("/n")]
    with quiet():                                   # no replicates (n_boot 0): every interval undefined
        return {k: [clean(x) for x in intervals.interval(boot.get(k, ()), estimates[k], method=method,
                                                         bounds=_bounds(k, signed))] for k in keys}


def _signed(data: "_Data", eligible: Mapping[str, list[int]]) -> set[str]:
    return {f"fairness/{a}/f1_gap" for a in data.order if len(eligible[a]) == 2}


def _sign(order: tuple[str, ...], keep: list[int]) -> str:
    """The direction of an attribute's F1 gap, naming the groups actually compared."""
    return f"{order[keep[0]]} - {order[keep[1]]}" if len(keep) == 2 else "max - min"


def _result(observed, boot, perm, data, small, eligible, min_group, n_boot, n_perm, seed, design,
            return_replicates) -> dict:
    result = nest({k: clean(v) for k, v in observed.items() if "/excluded/" not in k})
    result["n"] = int(observed["n"])
    result["excluded"] = nest({k.replace("fairness/", "").replace("/excluded", ""): int(v)
                               for k, v in observed.items() if "/excluded/" in k and np.isfinite(v)})
    ci = _intervals(boot, observed, _signed(data, eligible), design["interval"])
    gap_keys = [k for k in observed if k.startswith("fairness/") and "/excluded/" not in k]
    floor, p_value = gap_tests(observed, perm, gap_keys, n_perm)
    result["ci"] = nest(ci)
    result |= gap_sections(observed, ci, floor, p_value, gap_keys)
    result["settings"] = {"n_boot": n_boot, "n_perm": n_perm, "seed": seed, "ece_bins": stats.N_BINS, "min_group": min_group,
                          "version": STATS_VERSION, "resampling": design,
                          "attributes": {a: {"groups": list(o), "too_small": small[a], "sign": _sign(o, eligible[a])}
                                         for a, o in data.order.items()}}
    if return_replicates:
        result["_replicates"] = boot
        result["_signed"] = sorted(_signed(data, eligible))
    return result


def aggregate_seeds(results: list[dict]) -> dict:
    """Across seeds: mean and sd of each metric, and a CI pooling all seeds' bootstrap replicates,
    so it reflects both seed and sample variation. ``results`` come from evaluate(..., return_replicates=True)."""
    keys = [k for k in results[0]["_replicates"] if k != "n" and "/excluded/" not in k and not k.endswith("/n")]
    method = results[0]["settings"]["resampling"]["interval"]
    signed = set(results[0].get("_signed", ()))
    out = {}
    for k in keys:
        values = np.array([_lookup(r, k) for r in results], dtype=float)
        pooled = np.concatenate([r["_replicates"][k] for r in results])
        with quiet():
            mean = np.nanmean(values)
            lo, hi = intervals.interval(pooled, mean, method=method, bounds=_bounds(k, signed))
            out[k] = {"mean": clean(mean), "sd": clean(np.nanstd(values, ddof=1)) if len(values) > 1 else None,
                      "ci": [clean(lo), clean(hi)], "n_seeds": len(values)}
    return nest(out)


def _lookup(tree: dict, path: str):
    node = tree
    for part in path.split("/"):
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return np.nan
    return node
