"""Metrics of binary and multi-label findings, with patient-level CIs, permutation p-values and noise floors.

``truth`` is (N, F): 1, 0, or NaN where a finding is masked (uncertain or unlabelled) for an image — left out
of that finding's metrics, never counted negative. ``prob`` is (N, F); ``thresholds`` (F,) were chosen on
validation (``ranking.choose_threshold``) and a score >= its threshold calls the finding.

Per finding: AUROC, AUPRC (average precision), TPR and FPR at the threshold, ECE (15 equal-width bins of
the finding's probability). Per group of each attribute: AUROC, TPR, FPR per finding and the
underdiagnosis rate. Underdiagnosis (Seyyed-Kalantari et al. 2021) is the rate at which images *with* a
finding are called "No Finding": with a "No Finding" label among the findings, its false-positive rate;
without one, the share of images with at least one positive finding where no finding reaches its threshold.

Gaps (under ``fairness/<attr>``, each with CI, p-value and noise floor as in ``suite``): ``auroc_gap/<F>`` and
``underdiagnosis_gap`` (max - min over the groups), ``eqodds/<F>`` (1/2 (spread of TPR + spread of FPR), spread
= max - min over the groups: fairlearn's ``equalized_odds_difference(agg="mean")``). Equity (``equity/<attr>``,
CIs only): ``worst_auroc/<F>`` and FairCLIP's ``es_auc/<F>`` = AUC / (1 + sum_g |AUC_g - AUC|). A value a
group cannot have (no positive, or no negative image of a finding) is NaN and named in ``undefined``.

The resampling is ``resample``'s: patients drawn with replacement within strata (a patient with a positive
finding, without, or mixed), a patient's group label permuted with all its images.
"""

from __future__ import annotations

from functools import partial
from typing import Mapping

import numpy as np

from embedkit.metrics import intervals, resample, stats
from embedkit.metrics.ranking import Ranked
from embedkit.metrics.suite import (MIN_GROUP, N_BOOT, N_PERM, STATS_VERSION, clean, gap_sections, gap_tests,
                                   group_codes, nest, present_groups, quiet)
from embedkit.tasks import NO_FINDING

RATES = ("tp", "fn", "fp", "tn")


class _Rows:
    """The rows reduced once: per-finding ranked scores (overall and per group) and per-patient counts."""

    def __init__(self, truth, prob, thresholds, findings, groups, order, patient_id):
        self.truth, self.prob = np.asarray(truth, dtype=float), np.asarray(prob, dtype=float)
        self.findings, self.F = tuple(findings), len(findings)
        self.valid = np.isfinite(self.truth)
        called = self.prob >= np.asarray(thresholds, dtype=float)[None]
        sick, healthy_call, judged = _underdiagnosis(self.truth, called, self.findings)
        y = np.nan_to_num(self.truth).astype(bool)
        per_row = [self.valid & y & called, self.valid & y & ~called, self.valid & ~y & called, self.valid & ~y & ~called]
        self.X = np.concatenate([np.ones((len(y), 1)), np.stack(per_row, -1).reshape(len(y), -1),
                                 np.stack([judged & sick, judged & sick & healthy_call], -1)], 1).astype(float)
        self.order = {a: tuple(order[a]) if order and a in order else present_groups(groups[a]) for a in groups}
        self.codes = {a: group_codes(np.asarray(groups[a]).astype(str), self.order[a]) for a in groups}
        self.clusters = resample.Clusters(patient_id, (y & self.valid).any(1).astype(np.int64), 2)
        sizes = [len(self.order[a]) + 1 for a in self.codes]          # each attribute's groups and "other"
        self.slot = dict(zip(self.codes, 1 + np.r_[0, np.cumsum(sizes)[:-1]].astype(int)))  # first slot (0: all rows)
        slots = np.stack([self.codes[a] + self.slot[a] for a in self.codes], 1)
        self.ranked = [Ranked(self.truth[keep, f], self.prob[keep, f], self.clusters.patient[keep], slots[keep],
                              sum(sizes)) for f, keep in enumerate(self.valid.T)]
        self.images = np.bincount(self.clusters.patient, minlength=self.clusters.n).astype(float)
        self.cal = self._calibration()

    def patient_sums(self, values: np.ndarray, cells: np.ndarray | None = None, k: int = 1) -> np.ndarray:
        """(P, k * K) sums of per-row ``values`` (N, K) per patient (and per cell)."""
        index = self.clusters.patient * k + (0 if cells is None else cells)
        return stats.sums_by(values, index, self.clusters.n * k).reshape(self.clusters.n, -1)

    def _calibration(self) -> np.ndarray:
        """(P, F * bins) per-patient sum of p - y per finding and probability bin: a bin's |sum p - sum y| is
        all the binned ECE needs of it, the bin counts summing to the finding's labelled rows (``_ece``)."""
        F, bins = self.F, stats.N_BINS
        b = np.clip(np.ceil(self.prob * bins).astype(np.int64) - 1, 0, bins - 1)
        cell = (self.clusters.patient[:, None] * F + np.arange(F)) * bins + b              # (N, F)
        keep = self.valid
        gap = (self.prob - np.nan_to_num(self.truth))[keep]
        return np.bincount(cell[keep], weights=gap, minlength=self.clusters.n * F * bins).reshape(self.clusters.n, -1)


def _underdiagnosis(truth: np.ndarray, called: np.ndarray, findings: tuple[str, ...]):
    """Per row: has a finding, is called "No Finding", and whether the row counts (its truth is known)."""
    if NO_FINDING in findings:
        nf = findings.index(NO_FINDING)
        return truth[:, nf] == 0, called[:, nf], np.isfinite(truth[:, nf])
    sick = (truth == 1).any(1)
    return sick, ~called.any(1), sick | np.isfinite(truth).all(1)


def _rates(counts: np.ndarray, F: int) -> dict[str, np.ndarray]:
    """TPR, FPR (b, F) and underdiagnosis (b,) from (b, 1 + 4F + 2) sums (rows, per-finding rates, underdiagnosis)."""
    c = counts[:, 1:1 + 4 * F].reshape(len(counts), F, 4)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.where(c[..., 0] + c[..., 1] > 0, c[..., 0] / (c[..., 0] + c[..., 1]), np.nan)
        fpr = np.where(c[..., 2] + c[..., 3] > 0, c[..., 2] / (c[..., 2] + c[..., 3]), np.nan)
        under = np.where(counts[:, -2] > 0, counts[:, -1] / counts[:, -2], np.nan)
    return {"tpr": tpr, "fpr": fpr, "underdiagnosis": under}


def _ece(cal: np.ndarray, counts: np.ndarray, F: int) -> np.ndarray:
    """(b, F) binned ECE of each finding's probability: sum over bins of |sum p - sum y| (``cal`` (b, F * bins)
    sums) over the finding's labelled rows (the tp, fn, fp, tn of ``counts`` (b, 1 + 4F + 2))."""
    n = counts[:, 1:1 + 4 * F].reshape(len(counts), F, 4).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.abs(cal.reshape(len(cal), F, stats.N_BINS)).sum(-1) / n, np.nan)


def _spread(values: np.ndarray) -> np.ndarray:
    """max - min over the groups (axis 1) where at least two are defined, else NaN."""
    defined = np.isfinite(values).sum(1)
    with quiet():
        return np.where(defined >= 2, np.nanmax(values, 1) - np.nanmin(values, 1), np.nan)


class _Evaluation:
    """Observed, bootstrap and permutation replicates of every metric, one code path."""

    def __init__(self, rows: _Rows, min_group: int):
        self.r = rows
        sizes = {a: np.bincount(c, minlength=len(rows.order[a]) + 1) for a, c in rows.codes.items()}
        self.eligible = {a: [i for i in range(len(rows.order[a])) if sizes[a][i] >= min_group] for a in rows.codes}
        # counts per patient (and group): integers, exact in float32 and half the traffic of the replicates' products
        self.plain = rows.patient_sums(rows.X).astype(np.float32)
        self.total = self.plain.sum(0)                             # every patient's: a permutation's constant
        self.cells = {a: [self._group_sums(c == g) for g in range(len(rows.order[a]))] for a, c in rows.codes.items()}
        # an attribute every row has: its last group's sums are all rows' less the other groups' (integers, exact)
        self.complete = {a: len(o) > 0 and not (rows.codes[a] == len(o)).any() for a, o in rows.order.items()}
        # calibration sums in the counts' precision: float64 for the observed value, float32 for replicates (an ECE
        # off by ~1e-7, far inside its interval, at half the cost of the product)
        self.cal = {np.dtype(np.float64): rows.cal, np.dtype(np.float32): rows.cal.astype(np.float32)}

    def _group_sums(self, rows_in: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The patients with rows in one group, and the sums of those rows per patient: a replicate's group sums
        are then a product over the group's patients alone, not over every patient with every group's columns."""
        patients, at = np.unique(self.r.clusters.patient[rows_in], return_inverse=True)
        return patients, stats.sums_by(self.r.X[rows_in], at.ravel(), len(patients)).astype(np.float32)

    def ranks(self, wt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(b, F, slots + 1) AUROC of every row and of each group, and (b, F) AP, of replicates ``wt`` (P, b)."""
        parts = [ranked.weighted(wt) for ranked in self.r.ranked]
        return np.stack([p[0] for p in parts], 1), np.stack([p[1] for p in parts], 1)

    def overall(self, counts: np.ndarray, sums: np.ndarray, ranks: tuple) -> dict[str, np.ndarray]:
        """Overall metrics of replicates drawing each patient ``counts`` (b, P) times, with their count ``sums``
        (``counts @ plain``) and ``ranks``."""
        r, out = self.r, {}
        rates, ece = _rates(sums, r.F), _ece(counts @ self.cal[counts.dtype], sums, r.F)
        out["n"] = counts @ r.images
        auroc, auprc = ranks[0][..., 0], ranks[1]
        with quiet():
            out["auroc_macro"], out["auprc_macro"] = np.nanmean(auroc, 1), np.nanmean(auprc, 1)
        out["underdiagnosis"] = rates["underdiagnosis"]
        for f, name in enumerate(r.findings):
            out |= {f"auroc/{name}": auroc[:, f], f"auprc/{name}": auprc[:, f], f"tpr/{name}": rates["tpr"][:, f],
                    f"fpr/{name}": rates["fpr"][:, f], f"ece/{name}": ece[:, f]}
        return out

    def grouped(self, attr: str, counts: np.ndarray, total: np.ndarray, ranks: tuple) -> dict[str, np.ndarray]:
        """One attribute's group metrics and gaps under bootstrap ``counts`` (b, P), with every row's count sums
        ``total`` and the ``ranks``."""
        r = self.r
        k = len(r.order[attr]) + 1
        last = self.complete[attr]
        sums = [counts[:, patients] @ group for patients, group in self.cells[attr][:-1 if last else None]]
        sums = np.stack(sums + ([total - sum(sums)] if last else []), 1)
        auroc = ranks[0][..., r.slot[attr]:r.slot[attr] + k - 1].transpose(0, 2, 1)
        return self._assemble(attr, sums, auroc)

    def permuted(self, attr: str, labels: np.ndarray) -> dict[str, np.ndarray]:
        """One attribute's group metrics and gaps when each patient's images carry ``labels`` (b, P). Only the
        gaps are kept, so only the groups they compare are summed: the others get no counts (0) and no AUROC (NaN)."""
        r, keep = self.r, self.eligible[attr]
        if len(keep) < 2:
            return {}
        k = len(r.order[attr]) + 1
        labels_t = np.ascontiguousarray(labels.T)                    # uint8 already where the groups fit (resample)
        last = self.complete[attr] and len(keep) == k - 1     # every patient in a compared group: one by difference
        summed = keep[:-1] if last else keep
        member = labels_t[:, None, :] == np.asarray(summed, dtype=labels_t.dtype)[None, :, None]   # (P, groups, b)
        sums = np.zeros((len(labels), k - 1, self.plain.shape[1]), dtype=np.float32)
        part = self.plain.T @ member.reshape(len(member), -1).astype(np.float32)             # (K, groups * b)
        sums[:, summed] = part.reshape(-1, len(summed), len(labels)).T
        if last:
            sums[:, keep[-1]] = self.total - sums[:, summed].sum(1)
        auroc = np.full((len(labels), k - 1, r.F), np.nan)
        auroc[:, keep] = np.stack([ranked.permuted(labels_t, k - 1, keep)[:, keep] for ranked in r.ranked], 2)
        return self._assemble(attr, sums, auroc)

    def _assemble(self, attr, sums, auroc) -> dict[str, np.ndarray]:
        """Flat metrics of (b, k, K) count sums and (b, k-1, F) group AUROCs."""
        r, out = self.r, {}
        order, keep = r.order[attr], self.eligible[attr]
        rates = [_rates(sums[:, g], r.F) for g in range(len(order))]
        for g, name in enumerate(order):
            out[f"groups/{attr}/{name}/n"] = sums[:, g, 0]
            out[f"groups/{attr}/{name}/underdiagnosis"] = rates[g]["underdiagnosis"]
            for f, finding in enumerate(r.findings):
                out[f"groups/{attr}/{name}/auroc/{finding}"] = auroc[:, g, f]
                out[f"groups/{attr}/{name}/tpr/{finding}"] = rates[g]["tpr"][:, f]
                out[f"groups/{attr}/{name}/fpr/{finding}"] = rates[g]["fpr"][:, f]
        if len(keep) < 2:
            return out
        tpr = np.stack([rates[g]["tpr"] for g in keep], 1)
        fpr = np.stack([rates[g]["fpr"] for g in keep], 1)
        under = np.stack([rates[g]["underdiagnosis"] for g in keep], 1)
        out[f"fairness/{attr}/underdiagnosis_gap"] = _spread(under)
        auroc_gap, eqodds = _spread(auroc[:, keep]), 0.5 * (_spread(tpr) + _spread(fpr))      # (b, F) each
        for f, finding in enumerate(r.findings):
            out[f"fairness/{attr}/auroc_gap/{finding}"] = auroc_gap[:, f]
            out[f"fairness/{attr}/eqodds/{finding}"] = eqodds[:, f]
        return out

    def equity(self, attr: str, grouped: dict, overall: dict) -> dict[str, np.ndarray]:
        """Worst-group AUROC and ES-AUC per finding from group and overall AUROCs of the same replicates."""
        out = {}
        names = [self.r.order[attr][g] for g in self.eligible[attr]]
        if len(names) < 2:
            return out
        for finding in self.r.findings:
            groups = np.stack([grouped[f"groups/{attr}/{g}/auroc/{finding}"] for g in names], 1)
            auc = overall[f"auroc/{finding}"]
            with quiet():
                out[f"equity/{attr}/worst_auroc/{finding}"] = np.where(np.isfinite(groups).all(1), np.nanmin(groups, 1), np.nan)
                out[f"equity/{attr}/es_auc/{finding}"] = auc / (1 + np.abs(groups - auc[:, None]).sum(1))
        return out


def evaluate_findings(truth: np.ndarray, prob: np.ndarray, *, findings: tuple[str, ...], thresholds,
                      groups: Mapping[str, np.ndarray], order: Mapping[str, tuple[str, ...]] | None = None,
                      patient_id=None, min_group: int = MIN_GROUP, n_boot: int = N_BOOT, n_perm: int = N_PERM,
                      seed: int = 0, interval: str = intervals.DEFAULT, return_replicates: bool = False,
                      threads: int | None = None) -> dict:
    """Every finding metric of one run as a JSON-ready dict (see the module docstring); with
    ``return_replicates`` the bootstrap replicates too, for ``suite.aggregate_seeds``; ``threads`` blocks of
    replicates at once (the same numbers; None: a core each where there are several)."""
    if not groups:
        groups = {"all": np.full(len(truth), "all")}
    rows = _Rows(truth, prob, thresholds, findings, groups, order, patient_id)
    ev = _Evaluation(rows, min_group)
    rng = np.random.default_rng(seed)

    def everything(counts):
        counts = counts if len(counts) == 1 else counts.astype(np.float32)    # replicates: half the memory traffic
        wt = np.ascontiguousarray(counts.T, dtype=np.uint8 if counts.max() < 256 else np.float32)
        ranks, total = ev.ranks(wt), counts @ ev.plain
        overall = ev.overall(counts, total, ranks)
        for a in rows.codes:
            grouped = ev.grouped(a, counts, total, ranks)
            overall |= grouped | ev.equity(a, grouped, overall)
        return overall

    observed = {k: v[0] for k, v in everything(np.ones((1, rows.clusters.n))).items()}
    boot = _stacked(resample.map_blocks(everything, rows.clusters.bootstrap_counts(n_boot, rng), threads))
    perm = {}
    for a in rows.codes:
        labels = rows.clusters.patient_labels(rows.codes[a], len(rows.order[a]) + 1)
        blocks = rows.clusters.permuted_labels(labels, n_perm, rng)
        parts = resample.map_blocks(partial(ev.permuted, a), blocks, threads)
        perm |= {k: v for k, v in _stacked(parts).items() if k.startswith(f"fairness/{a}/")}
    result = _result(observed, boot, perm, n_perm, interval)
    result["undefined"] = _undefined(rows, observed)
    result["thresholds"] = {f: float(t) for f, t in zip(findings, np.asarray(thresholds, dtype=float))}
    result["settings"] = {"task": "multilabel" if rows.F > 1 else "binary", "findings": list(findings),
                          "n_boot": n_boot, "n_perm": n_perm, "seed": seed, "min_group": min_group, "ece_bins": stats.N_BINS,
                          "version": STATS_VERSION, "resampling": {
                              "unit": "patient" if patient_id is not None else "image", "patients": rows.clusters.n,
                              "strata": "has a positive finding / has none / mixed", "interval": interval},
                          "underdiagnosis": "FPR of No Finding" if NO_FINDING in findings else
                          "images with a finding where no finding reaches its threshold",
                          "attributes": {a: {"groups": list(o), "too_small": [g for i, g in enumerate(o) if i not in ev.eligible[a]]}
                                         for a, o in rows.order.items()}}
    if return_replicates:
        result["_replicates"], result["_signed"] = boot, []
    return result


def _stacked(parts: list[dict]) -> dict:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def _result(observed: dict, boot: dict, perm: dict, n_perm: int, method: str) -> dict:
    """Estimates, CIs (every metric), and for the gaps p-values, noise floors, excess and significance."""
    result = nest({k: clean(v) for k, v in observed.items()})
    result["n"] = int(observed["n"])
    with quiet():
        ci = {k: [clean(x) for x in intervals.interval(boot[k], observed[k], method=method, bounds=(0.0, 1.0))]
              for k in boot if k != "n" and not k.endswith("/n")}
        ci |= {k: [None, None] for k in observed if k not in ci and k != "n" and not k.endswith("/n")}
    gaps = [k for k in observed if k.startswith("fairness/")]
    floor, p = gap_tests(observed, perm, gaps, n_perm)
    result["ci"] = nest(ci)
    return result | gap_sections(observed, ci, floor, p, gaps)


def _undefined(rows: _Rows, observed: dict) -> dict[str, str]:
    """Why each NaN group AUROC is NaN: the group has no positive (or no negative) image of the finding."""
    out = {}
    for a, codes in rows.codes.items():
        for g, name in enumerate(rows.order[a]):
            for f, finding in enumerate(rows.findings):
                key = f"groups/{a}/{name}/auroc/{finding}"
                if key in observed and not np.isfinite(observed[key]):
                    y = rows.truth[(codes == g) & rows.valid[:, f], f]
                    out[key] = ("no image of this group is labelled for the finding" if len(y) == 0 else
                                "no positive image of the finding in this group" if not (y == 1).any() else
                                "no negative image of the finding in this group")
    return out
