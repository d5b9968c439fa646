"""Model selection on validation only, with the strategy named. MEDFAIR's three, as its
``results_analysis`` notebook computes them (per-group metric: the group's macro one-vs-rest AUC):

- ``overall``: the best overall validation AUC;
- ``pareto``: among candidates Pareto-optimal on the per-group validation AUCs, the best worst-group AUC;
- ``dto``: the smallest distance to the utopia point of the per-group AUCs, each group's column divided by
  its maximum over the candidates (the utopia is then all ones).

Beside them ``loss`` (the lowest overall validation loss: the paper's) and ``worst-group`` (the best
worst-group validation accuracy). Ties break by the overall validation AUC, then the loss — never by the
order the candidates were listed in.
"""

from __future__ import annotations

import warnings

import numpy as np

from embedkit.errors import EmbedkitError
from embedkit.metrics.auc import binary_auc, macro_ovr_auc

STRATEGIES = ("loss", "overall", "worst-group", "pareto", "dto")
CRITERIA = {"loss": "lowest validation loss", "overall": "highest overall validation AUC",
            "worst-group": "highest worst-group validation accuracy",
            "pareto": "Pareto-optimal on per-group validation AUC, then the best worst-group AUC",
            "dto": "nearest the utopia point of per-group validation AUCs (each divided by its maximum)"}
TIE = 1e-12


def check(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise EmbedkitError(f"--selection {strategy!r}: choose {', '.join(STRATEGIES)}")
    return strategy


def scores(y: np.ndarray, proba: np.ndarray, groups: np.ndarray, order: tuple[str, ...]) -> dict:
    """One candidate's validation scores: overall AUC and accuracy, and each group's AUC and accuracy
    (findings targets (N, F): the mean over findings of each finding's AUROC and accuracy at 0.5)."""
    groups = np.asarray(groups)
    auc, accuracy = (finding_auc, _finding_accuracy) if y.ndim == 2 else (macro_ovr_auc, _accuracy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        group_auc = {g: auc(y[groups == g], proba[groups == g]) for g in order if (groups == g).any()}
        group_acc = {g: accuracy(y[groups == g], proba[groups == g]) for g in order if (groups == g).any()}
        overall = {"auc": auc(y, proba), "accuracy": accuracy(y, proba)}
    return overall | {"group_auc": group_auc, "worst_group_auc": _nanmin(group_auc.values()),
                      "worst_group_accuracy": _nanmin(group_acc.values())}


def _accuracy(y: np.ndarray, proba: np.ndarray) -> float:
    return float((proba.argmax(1) == y).mean())


def finding_auc(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean AUROC over the findings defined here (labelled rows only)."""
    values = [binary_auc(y[ok, f], proba[ok, f]) for f in range(y.shape[1]) for ok in [np.isfinite(y[:, f])]]
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def _finding_accuracy(y: np.ndarray, proba: np.ndarray) -> float:
    ok = np.isfinite(y)
    return float(((proba >= 0.5) == (y == 1))[ok].mean()) if ok.any() else float("nan")


def _nanmin(values) -> float:
    v = [x for x in values if np.isfinite(x)]
    return float(min(v)) if v else float("nan")


def _best(primary: np.ndarray, cands: list[dict], losses, among=None) -> int:
    """The candidate with the highest ``primary`` (NaN lowest), ties by overall AUC, then by loss."""
    among = range(len(cands)) if among is None else among
    key = lambda i: (-_finite(primary[i]), -_finite(cands[i]["auc"]), losses[i])  # noqa: E731
    ranked = sorted(among, key=key)
    return ranked[0]


def _finite(x) -> float:
    return float(x) if np.isfinite(x) else -np.inf


def _group_matrix(cands: list[dict]) -> np.ndarray:
    """(candidates, groups) per-group AUC; a group undefined for a candidate counts as 0."""
    groups = sorted({g for c in cands for g in c["group_auc"]})
    return np.nan_to_num(np.array([[c["group_auc"].get(g, np.nan) for g in groups] for c in cands], dtype=float), nan=0.0)


def pareto_front(matrix: np.ndarray) -> list[int]:
    """Rows not dominated by another (at least as good everywhere, better somewhere)."""
    out = []
    for i, row in enumerate(matrix):
        dominated = any(np.all(other >= row - TIE) and np.any(other > row + TIE)
                        for j, other in enumerate(matrix) if j != i)
        if not dominated:
            out.append(i)
    return out


def pick(strategy: str, cands: list[dict], losses: list[float]) -> int:
    """The index a strategy chooses among candidates with ``scores`` and validation losses."""
    n = len(cands)
    if strategy == "loss":
        return _best(-np.array(losses, dtype=float), cands, losses)
    if strategy == "overall":
        return _best(np.array([c["auc"] for c in cands]), cands, losses)
    if strategy == "worst-group":
        return _best(np.array([c["worst_group_accuracy"] for c in cands]), cands, losses)
    matrix = _group_matrix(cands)
    if strategy == "pareto":
        return _best(matrix.min(1), cands, losses, among=pareto_front(matrix))
    top = matrix.max(0)
    scaled = matrix / np.where(top > 0, top, 1.0)
    distance = np.sqrt(((1.0 - scaled) ** 2).sum(1))
    return _best(-distance, cands, losses, among=range(n))


def choose(cfg, cache, val, members, val_proba: list[np.ndarray]) -> tuple[int, dict]:
    """The index of the chosen candidate and the record of the choice (strategy, every candidate's scores)."""
    strategy = check(cfg.selection)
    losses = [m.val_loss for m in members]
    record = {"strategy": strategy, "criterion": CRITERIA[strategy], "ties": "overall validation AUC, then loss"}
    from embedkit.heads.groups import attribute_labels

    name, groups, order = attribute_labels(cfg, cache, val.rows)
    s = [scores(val.y.numpy(), p, groups, order) for p in val_proba]
    record |= {"attribute": name, "candidates": s}
    return pick(strategy, s, losses), record


def epoch_criterion(strategy: str, y: np.ndarray, groups: np.ndarray, order: tuple[str, ...]):
    """For methods that choose their epoch by the strategy (Group DRO, the adversary): a function of the
    validation probabilities (members, N, C) returning one score per member, lower better — the strategy's
    own scalar (``loss``: None, the trainer's validation loss; ``pareto``/``dto``: the worst-group AUC, as
    MEDFAIR's ``worst_auc`` epoch rule)."""
    if strategy == "loss":
        return None
    key = {"overall": "auc", "worst-group": "worst_group_accuracy", "pareto": "worst_group_auc", "dto": "worst_group_auc"}[strategy]

    def score(proba: np.ndarray) -> np.ndarray:
        return np.array([-_finite(scores(y, p, groups, order)[key]) for p in proba])

    return score
