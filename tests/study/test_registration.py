"""Registering a module is all it takes: a head, an intervention, a model family and a dataset builder, each
registered here at runtime, run through the CLI and through a study TOML with no other edit."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from embedkit.cli.app import main
from embedkit.data.registry import Builder, Summary, option
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


@dataclass
class MiniOptions:
    per_group: int = option(5, help="Images per cell.", min=5)


def _mini(opts: MiniOptions, out: Path) -> Summary:
    from embedkit.data.phantom import PhantomSpec, make_phantom

    return Summary(make_phantom(out, PhantomSpec(per_group=opts.per_group, size=16, seed=1)), lines=["mini built"])


MINI = Builder("mini-test", "A tiny phantom (a dataset builder registered by a test).", MiniOptions, _mini, folder=True)


@pytest.fixture
def registered(monkeypatch):
    from embedkit.data import registry as builders
    from embedkit.models import registry

    monkeypatch.setitem(base._REGISTRY, Prior.name, Prior)
    monkeypatch.setitem(base._REGISTRY, Shift.name, Shift)
    monkeypatch.setitem(registry._MODELS, "mytower", replace(registry.get("medclip-rn50"), name="mytower"))
    monkeypatch.setitem(builders._BUILDERS, MINI.name, MINI)


STUDY = """
seeds = [0]
[data]
kind = "mini-test"
out = "mini"
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


def test_registered_modules_run_through_a_study_and_the_cli(tmp_path, registered, capsys):
    config = tmp_path / "s.toml"
    config.write_text(STUDY)
    steps = run_study(load_study(config))
    assert not [s.error for s in steps if s.error], [s.error for s in steps if s.error]
    runs = tmp_path / "runs/mini/mytower-tiny"
    assert sorted(p.name for p in runs.iterdir()) == ["linear", "linear+shift-test-sex", "prior-test"]
    assert "prior-test" in (tmp_path / "report/report.md").read_text()

    manifest = str(tmp_path / "mini/manifest.csv")
    assert main(["data", "mini-test", "--out", str(tmp_path / "mini2"), "--per-group", "6"]) == 0
    assert "mini built" in capsys.readouterr().out and (tmp_path / "mini2/manifest.csv").is_file()
    assert main(["extract", "--model", "mytower-tiny", "--manifest", manifest, "--cache-dir", str(tmp_path / "c2")]) == 0
    assert main(["probe", "--model", "mytower-tiny", "--manifest", manifest, "--cache-dir", str(tmp_path / "c2"),
                 "--runs-dir", str(tmp_path / "r2"), "--head", "prior-test,linear", "--mitigate", "shift-test",
                 "--epochs", "2"]) == 0
    made = sorted(p.name for p in (tmp_path / "r2/mini/mytower-tiny").iterdir())
    assert made == ["linear", "linear+shift-test-sex", "prior-test", "prior-test+shift-test-sex"]


def test_an_unregistered_method_is_refused_with_the_closest_name(tmp_path):
    config = tmp_path / "s.toml"
    config.write_text(STUDY.replace('kind = "mini-test"', 'kind = "phantom"').replace("mytower-tiny", "clip-tiny")
                      .replace('out = "mini"', 'out = "p"').replace("prior-test = {}", "liner = {}")
                      .replace(', mitigate = ["shift-test"]', ""))
    from embedkit.errors import EmbedkitError

    with pytest.raises(EmbedkitError, match="unknown key 'methods.liner' \\(did you mean 'linear'\\?\\)"):
        load_study(config)
