"""Every metric of one run, with bootstrap CIs, permutation p-values and the noise floor.

All statistics come from per-(sex x age) cell counts (``stats``), so the observed values,
1,000 stratified bootstrap resamples and 1,000 within-class permutations of the group labels
are computed the same way, in one vectorised pass each.

Conventions (also in the report): predictions are the argmax of the probabilities (ties go to
the lower class index); ``ece`` is the paper's Eq. 4 (mean |p_i - o_i| of the top-class
probability, no bins) and ``ece_binned`` the 15-bin top-class ECE, each with its gap; f1_gap is signed A - A' (sex: M - F, age: young - old); the noise floor
is the median of |gap| under the permutation null, and the excess is |gap| minus that floor.
A gap is marked significant when its bootstrap CI excludes 0 and its permutation p < 0.05.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from itertools import combinations

import numpy as np

from embedkit.manifest import AGE_GROUPS, SEXES, sex_age_groups
from embedkit.metrics import stats

CELLS = sex_age_groups()  # M-young, M-old, F-young, F-old
ATTRIBUTES = {
    "sex": {s: [i for i, c in enumerate(CELLS) if c.startswith(s + "-")] for s in SEXES},
    "age": {a: [i for i, c in enumerate(CELLS) if c.endswith("-" + a)] for a in AGE_GROUPS},
    "sex_age": {c: [i] for i, c in enumerate(CELLS)},
}
GAPS = ("f1_gap", "eqodds", "ece_gap", "ece_binned_gap")


def _group_stats(cm: np.ndarray, cal: np.ndarray, cells: list[int]):
    return cm[:, cells].sum(1), cal[:, cells].sum(1)


def _gap_pair(cm_a, cm_b, cal_a, cal_b) -> dict[str, np.ndarray]:
    f1_diff = stats.f1_from(cm_a, absent="nan") - stats.f1_from(cm_b, absent="nan")
    (tpr_a, fpr_a), (tpr_b, fpr_b) = stats.rates_from(cm_a), stats.rates_from(cm_b)
    terms = np.concatenate([np.abs(tpr_a - tpr_b), np.abs(fpr_a - fpr_b)], axis=-1)
    with np.errstate(invalid="ignore"), _quiet():
        return {
            "f1_gap": np.nanmean(f1_diff, -1),
            "eqodds": np.nanmean(terms, -1),
            "ece_gap": np.abs(stats.ece_from(cal_a) - stats.ece_from(cal_b)),
            "ece_binned_gap": np.abs(stats.ece_binned_from(cal_a) - stats.ece_binned_from(cal_b)),
            "excluded/f1_gap": np.isnan(f1_diff).sum(-1).astype(float),
            "excluded/eqodds": np.isnan(terms).sum(-1).astype(float),
        }


@contextmanager
def _quiet():
    """Silence 'mean of empty slice' warnings: an all-NaN mean is NaN by design."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def summarise(cm: np.ndarray, cal: np.ndarray, classes: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Flat ``{"path/to/metric": (B,) array}`` from (B, 4, C, C) confusions and (B, 4, bins, 4) calibration."""
    out: dict[str, np.ndarray] = {}
    total, total_cal = cm.sum(1), cal.sum(1)
    f1 = stats.f1_from(total, absent="zero")
    out["n"] = total.sum((-2, -1)).astype(float)
    out["accuracy"] = stats.accuracy_from(total)
    out["f1_macro"] = f1.mean(-1)
    out["var_f1"] = f1.var(-1)
    out["ece"] = stats.ece_from(total_cal)
    out["ece_binned"] = stats.ece_binned_from(total_cal)
    for c, name in enumerate(classes):
        out[f"f1/{name}"] = f1[:, c]
    with _quiet():
        for attr, groups in ATTRIBUTES.items():
            per = {g: _group_stats(cm, cal, cells) for g, cells in groups.items()}
            for g, (gcm, gcal) in per.items():
                gf1 = stats.f1_from(gcm, absent="nan")
                out[f"groups/{attr}/{g}/n"] = gcm.sum((-2, -1)).astype(float)
                out[f"groups/{attr}/{g}/accuracy"] = stats.accuracy_from(gcm)
                out[f"groups/{attr}/{g}/f1_macro"] = np.nanmean(gf1, -1)
                out[f"groups/{attr}/{g}/ece"] = stats.ece_from(gcal)
                out[f"groups/{attr}/{g}/ece_binned"] = stats.ece_binned_from(gcal)
            pairs = [_gap_pair(per[a][0], per[b][0], per[a][1], per[b][1]) for a, b in combinations(groups, 2)]
            if len(groups) == 2:
                for k, v in pairs[0].items():
                    out[f"fairness/{attr}/{k}"] = v
            else:  # more than two groups: the largest pairwise gap
                for k in pairs[0]:
                    stacked = np.stack([p[k] for p in pairs])
                    out[f"fairness/{attr}/{k}"] = stacked.sum(0) if k.startswith("excluded") else np.nanmax(np.abs(stacked), 0)
    return out


ALPHA = 0.05


def significant(ci: list, p_value: float) -> bool:
    """A gap counts only when its CI excludes 0 *and* its permutation p-value is below ALPHA.

    The CI alone is not enough: eqodds and ece_gap are absolute values whose CI never includes 0,
    and on 240 test images the percentile bootstrap CI of the signed f1_gap excludes 0 in about
    10-12 % of simulations without any true difference (nominal 5 %), while the within-class
    permutation test holds its level (tests/metrics/test_evaluate.py)."""
    return bool(ci[0] is not None and (ci[0] > 0 or ci[1] < 0) and p_value < ALPHA)


def _encode(groups: np.ndarray) -> np.ndarray:
    index = {c: i for i, c in enumerate(CELLS)}
    return np.array([index[g] for g in groups], dtype=np.int64)


def _stats(y_true, y_pred, conf, correct, cells, idx, n_classes):
    return (stats.confusion(y_true[idx], y_pred[idx], cells if cells.ndim == 2 else cells[idx], n_classes=n_classes, n_cells=4),
            stats.calibration(conf[idx], correct[idx], cells if cells.ndim == 2 else cells[idx], n_cells=4))


def _bootstrap_index(strata: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(B, N) resample indices, resampling with replacement inside each stratum."""
    parts = []
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        parts.append(members[rng.integers(0, len(members), (n_boot, len(members)))])
    return np.concatenate(parts, axis=1)


def _permuted_cells(cells: np.ndarray, y_true: np.ndarray, n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """(P, N) group labels shuffled within each true class."""
    out = np.tile(cells, (n_perm, 1))
    for c in np.unique(y_true):
        members = np.flatnonzero(y_true == c)
        out[:, members] = rng.permuted(out[:, members], axis=1)
    return out


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


def _clean(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def evaluate(
    y_true: np.ndarray,
    proba: np.ndarray,
    *,
    sex: np.ndarray,
    age_group: np.ndarray,
    classes: tuple[str, ...],
    n_boot: int = 1000,
    n_perm: int = 1000,
    seed: int = 0,
    return_replicates: bool = False,
) -> dict:
    """All utility and fairness metrics of one run as a JSON-ready dict (see module docstring).

    Keys: n, accuracy, f1, f1_macro, var_f1, ece, groups, fairness (sex, age, sex_age), excluded,
    ci (same nesting, [low, high]), null (noise floor, same nesting as fairness), excess, p_value.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=float)
    y_pred = proba.argmax(1)
    conf, correct = proba.max(1), (y_pred == y_true).astype(float)
    cells = _encode(np.char.add(np.char.add(np.asarray(sex, dtype=str), "-"), np.asarray(age_group, dtype=str)))
    C = len(classes)
    rng = np.random.default_rng(seed)

    observed = {k: v[0] for k, v in summarise(*_stats(y_true, y_pred, conf, correct, cells, np.arange(len(y_true))[None], C), classes).items()}
    boot = summarise(*_stats(y_true, y_pred, conf, correct, cells, _bootstrap_index(y_true * 4 + cells, n_boot, rng), C), classes)
    perm_cells = _permuted_cells(cells, y_true, n_perm, rng)
    perm = summarise(*_stats(y_true, y_pred, conf, correct, perm_cells, np.broadcast_to(np.arange(len(y_true)), perm_cells.shape), C), classes)

    result = nest({k: _clean(v) for k, v in observed.items() if "/excluded/" not in k})
    result["n"] = int(observed["n"])
    excluded = {k.replace("fairness/", "").replace("/excluded", ""): int(v) for k, v in observed.items() if "/excluded/" in k}
    result["excluded"] = nest(excluded)
    with _quiet():
        ci = {k: [_clean(np.nanpercentile(v, 2.5)), _clean(np.nanpercentile(v, 97.5))]
              for k, v in boot.items() if k != "n" and "/excluded/" not in k and not k.endswith("/n")}
        gap_keys = [k for k in observed if k.startswith("fairness/") and "/excluded/" not in k]
        floor = {k: float(np.nanmedian(np.abs(perm[k]))) for k in gap_keys}
        p_value = {k: float((1 + np.sum(np.abs(perm[k]) >= abs(observed[k]) - 1e-12)) / (1 + n_perm)) for k in gap_keys}
    result["ci"] = nest(ci)
    result["null"] = nest({k.replace("fairness/", ""): _clean(v) for k, v in floor.items()})
    result["excess"] = nest({k.replace("fairness/", ""): _clean(abs(observed[k]) - floor[k]) for k in gap_keys})
    result["p_value"] = nest({k.replace("fairness/", ""): v for k, v in p_value.items()})
    result["significant"] = nest({k.replace("fairness/", ""): significant(ci[k], p_value[k]) for k in gap_keys})
    result["settings"] = {"n_boot": n_boot, "n_perm": n_perm, "seed": seed, "ece_bins": stats.N_BINS,
                          "sign": {"sex": "M - F", "age": "young - old"}}
    if return_replicates:
        result["_replicates"] = boot
    return result


def aggregate_seeds(results: list[dict]) -> dict:
    """Across seeds: mean and sd of each metric, and a CI pooling all seeds' bootstrap replicates,
    so it reflects both seed and sample variation. ``results`` come from evaluate(..., return_replicates=True)."""
    keys = [k for k in results[0]["_replicates"] if k != "n" and "/excluded/" not in k and not k.endswith("/n")]
    out = {}
    for k in keys:
        values = np.array([_lookup(r, k) for r in results], dtype=float)
        pooled = np.concatenate([r["_replicates"][k] for r in results])
        with _quiet():
            out[k] = {"mean": _clean(np.nanmean(values)), "sd": _clean(np.nanstd(values, ddof=1)) if len(values) > 1 else None,
                      "ci": [_clean(np.nanpercentile(pooled, 2.5)), _clean(np.nanpercentile(pooled, 97.5))],
                      "n_seeds": len(values)}
    return nest(out)


def _lookup(tree: dict, path: str):
    node = tree
    for part in path.split("/"):
        node = node[part]
    return np.nan if node is None else node
