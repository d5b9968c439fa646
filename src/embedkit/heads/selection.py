"""Model selection on validation only, with the strategy named (MEDFAIR's three): ``loss`` — the lowest
overall validation loss (the paper's); ``worst-group`` — the best worst-group validation accuracy over
the groups of the selection attribute; ``pareto`` — the candidate nearest the utopia point of
(validation accuracy, |validation F1 gap|), both scaled to the candidates' range."""

from __future__ import annotations

import numpy as np

from embedkit.errors import EmbedkitError

STRATEGIES = ("loss", "worst-group", "pareto")


def check(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise EmbedkitError(f"--selection {strategy!r}: choose {', '.join(STRATEGIES)}")
    return strategy


def scores(y: np.ndarray, proba: np.ndarray, groups: np.ndarray, order: tuple[str, ...]) -> dict:
    """Validation accuracy, worst-group accuracy and |F1 gap| of one candidate (no resampling)."""
    from embedkit.metrics import evaluate

    r = evaluate(y, proba, groups={"a": groups}, order={"a": order}, classes=tuple(map(str, range(proba.shape[1]))),
                 n_boot=1, n_perm=1, min_group=1)
    worst = min((g["accuracy"] for g in r["groups"]["a"].values() if g["accuracy"] is not None), default=float("nan"))
    gap = r["fairness"]["a"]["f1_gap"]
    return {"accuracy": r["accuracy"], "worst_group_accuracy": worst, "abs_f1_gap": abs(gap) if gap is not None else float("nan")}


def choose(cfg, cache, val, members, val_proba: list[np.ndarray]) -> tuple[int, dict]:
    """The index of the chosen candidate and the record of the choice (strategy, every candidate's scores)."""
    strategy = check(cfg.selection)
    losses = [m.val_loss for m in members]
    record = {"strategy": strategy, "criterion": {"loss": "lowest validation loss",
                                                  "worst-group": "highest worst-group validation accuracy",
                                                  "pareto": "nearest the utopia point of validation accuracy and |F1 gap|"}[strategy]}
    if strategy == "loss":
        return int(np.argmin(losses)), record
    import warnings

    from embedkit.heads.mitigation import attribute_labels

    name, groups, order = attribute_labels(cfg, cache, val.rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = [scores(val.y.numpy(), p, groups, order) for p in val_proba]
    record |= {"attribute": name, "candidates": s}
    if strategy == "worst-group":
        key = [(-np.nan_to_num(c["worst_group_accuracy"], nan=-1), loss) for c, loss in zip(s, losses)]
        return min(range(len(s)), key=key.__getitem__), record
    acc = np.array([c["accuracy"] for c in s])
    gap = np.nan_to_num(np.array([c["abs_f1_gap"] for c in s]), nan=np.inf)
    span = lambda v: (v.max() - v.min()) or 1.0  # noqa: E731
    finite = np.isfinite(gap)
    g = np.where(finite, gap, gap[finite].max() if finite.any() else 0.0)
    dist = ((acc.max() - acc) / span(acc)) ** 2 + ((g - g.min()) / span(g)) ** 2
    return int(np.argmin(dist)), record
