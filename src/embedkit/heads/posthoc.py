"""What the post-processing interventions share: the base method's probabilities (its finished runs, which the
runner reads rather than refits), mapped per group of the attribute as fitted on the validation split only, then
applied to validation and test."""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from embedkit.attributes import ACTED_ON
from embedkit.heads import base
from embedkit.heads.base import Fitted, Method
from embedkit.heads.groups import attribute_labels

EPS = 1e-7


class PostProcessing(Method):
    """Wraps ``--head`` (any method: zero-shot, linear, MLP, kNN): its fits, then a per-group map."""

    needs_attribute = True

    def settings(self, cfg) -> dict:
        return base.get(cfg.method).settings(cfg) | {"mitigate": self.name, "attribute": cfg.attribute or ACTED_ON}

    def fit_groups(self, cfg, logp: np.ndarray, y: np.ndarray, groups: np.ndarray, order) -> dict:
        raise NotImplementedError

    def apply(self, logp: np.ndarray, groups: np.ndarray, fitted: dict) -> np.ndarray:
        raise NotImplementedError

    def fit(self, cfg, cache, parts, seeds):
        yield from self.post(cfg, cache, parts, base.get(cfg.method).fit(cfg, cache, parts, seeds))

    def post(self, cfg, cache, parts, fits: Iterable[Fitted]) -> Iterator[Fitted]:
        """The base method's ``fits`` mapped per group (the runner passes its finished runs: no refit)."""
        _, g_val, order = attribute_labels(cfg, cache, parts["val"].rows)
        _, g_test, _ = attribute_labels(cfg, cache, parts["test"].rows)
        y_val = parts["val"].y.numpy()
        for f in fits:
            logp = {s: np.log(np.clip(f.proba[s], EPS, 1.0)) for s in ("val", "test")}
            fitted = self.fit_groups(cfg, logp["val"], y_val, g_val, order)
            proba = {"val": self.apply(logp["val"], g_val, fitted), "test": self.apply(logp["test"], g_test, fitted)}
            yield Fitted(f.seed, proba, f.selection | {"post_processing": {"method": self.name, "fitted_on": "validation",
                                                                          **_jsonable(fitted)}})


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _jsonable(fitted: dict) -> dict:
    return {k: {g: (v.tolist() if isinstance(v, np.ndarray) else float(v)) for g, v in d.items()} for k, d in fitted.items()}
