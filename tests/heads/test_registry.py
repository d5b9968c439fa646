"""The head protocol: a method registered in one module runs through the same run folders and records."""

import numpy as np
import pytest

from embedkit.errors import EmbedkitError
from embedkit.heads import base
from embedkit.heads.runner import run_experiment

from .test_runner import cfg


class Prior(base.Method):
    """Predicts the training split's class frequencies for every image."""

    name = "prior-test"

    def fit(self, cfg, cache, parts, seeds):
        freq = np.bincount(parts["train"].y.numpy(), minlength=len(cache.classes)) / len(parts["train"].y)
        for seed in seeds:
            yield base.Fitted(seed, {s: np.tile(freq, (len(parts[s].rows), 1)) for s in ("val", "test")},
                              {"criterion": "none"})


@pytest.fixture
def prior(monkeypatch):
    monkeypatch.setitem(base._REGISTRY, Prior.name, Prior)
    return Prior.name


def test_a_registered_method_needs_no_other_edit(synthetic_cache, tmp_path, prior):
    a, b = run_experiment(cfg(synthetic_cache, tmp_path, prior, seeds=(0, 1)))
    assert a.path.parent.name == prior and a.record["selection"] == {"criterion": "none"}
    assert a.record["metrics"]["accuracy"] == pytest.approx(1 / 3, abs=0.02)   # one class, balanced data
    again = run_experiment(cfg(synthetic_cache, tmp_path, prior, seeds=(0, 1)))
    assert all(r.skipped for r in again)


def test_the_registry_lists_the_methods_in_order_and_names_typos():
    assert base.names()[:4] == ("zeroshot", "linear", "mlp", "knn")
    with pytest.raises(EmbedkitError, match="did you mean mlp"):
        base.get("mpl")
