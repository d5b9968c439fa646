"""Registering a module is all it takes: a head, an intervention, a model family and a dataset kind, each
registered here at runtime, run through the CLI and through a study TOML with no other edit."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from embedkit.cli.app import main
from embedkit.heads import base
from embedkit.heads.posthoc import PostProcessing, softmax
from embedkit.study import load_study, run_study


class Prior(base.Method):
    """Predicts the training split's class frequencies for every image."""

    name, seeded = "prior-test", False

    def fit(self, cfg, cache, parts, seeds):
        freq = np.bincount(parts["train"].y.numpy(), minlength=len(cache.classes)) / len(parts["train"].y)
        for seed in seeds:
            yield base.Fitted(seed, {s: np.tile(freq, (len(parts[s].rows), 1)) for s in ("val", "test")}, {"criterion": "none"})


class Shift(PostProcessing):
    """A post-processing intervention that moves each group's log-probabilities by nothing (records its groups)."""

    name = "shift-test"

    def fit_groups(self, cfg, logp, y, groups, order):
        return {"shift": {g: 0.0 for g in order}}

    def apply(self, logp, groups, fitted):
        return softmax(logp)


def _mini(study, manifest, data):
    from embedkit.data.phantom import PhantomSpec, make_phantom

    return make_phantom(manifest.parent, PhantomSpec(per_group=data.get("per_group", 5), size=16, seed=1))


@pytest.fixture
def registered(monkeypatch):
    from embedkit.models import registry
    from embedkit.study import data

    monkeypatch.setitem(base._REGISTRY, Prior.name, Prior)
    monkeypatch.setitem(base._REGISTRY, Shift.name, Shift)
    monkeypatch.setitem(registry._MODELS, "mytower", replace(registry.get("medclip-rn50"), name="mytower"))
    monkeypatch.setitem(data.KINDS, "mini-test", _mini)


STUDY = """
seeds = [0]
[data]
kind = "mini-test"
out = "mini/manifest.csv"
per_group = 5
[paths]
cache_dir = "cache"
runs_dir = "runs"
report_dir = "report"
[models]
mytower-tiny = {}
[methods]
prior-test = {}
linear = { epochs = 2, mitigate = ["shift-test"] }
[report]
n_boot = 20
"""


def test_registered_modules_run_through_a_study_and_the_cli(tmp_path, registered):
    config = tmp_path / "s.toml"
    config.write_text(STUDY)
    steps = run_study(load_study(config))
    assert not [s.error for s in steps if s.error], [s.error for s in steps if s.error]
    runs = tmp_path / "runs/mini/mytower-tiny"
    assert sorted(p.name for p in runs.iterdir()) == ["linear", "linear+shift-test-sex", "prior-test"]
    assert "prior-test" in (tmp_path / "report/report.md").read_text()

    manifest = str(tmp_path / "mini/manifest.csv")
    assert main(["extract", "--model", "mytower-tiny", "--manifest", manifest, "--cache-dir", str(tmp_path / "c2")]) == 0
    assert main(["probe", "--model", "mytower-tiny", "--manifest", manifest, "--cache-dir", str(tmp_path / "c2"),
                 "--runs-dir", str(tmp_path / "r2"), "--head", "prior-test,linear", "--mitigate", "shift-test",
                 "--epochs", "2"]) == 0
    made = sorted(p.name for p in (tmp_path / "r2/mini/mytower-tiny").iterdir())
    assert made == ["linear", "linear+shift-test-sex", "prior-test", "prior-test+shift-test-sex"]


def test_an_unregistered_method_is_refused_with_the_closest_name(tmp_path):
    config = tmp_path / "s.toml"
    config.write_text(STUDY.replace('kind = "mini-test"', 'kind = "phantom"').replace("mytower-tiny", "clip-tiny")
                      .replace('out = "mini/manifest.csv"', 'out = "p"').replace("prior-test = {}", "liner = {}")
                      .replace(', mitigate = ["shift-test"]', ""))
    from embedkit.errors import EmbedkitError

    with pytest.raises(EmbedkitError, match="unknown key 'methods.liner' \\(did you mean 'linear'\\?\\)"):
        load_study(config)
