"""Fairness interventions as heads: each runs through the one protocol, acts on the declared attribute,
and on a planted group shift at least one shrinks the F1 gap beyond noise (a paired bootstrap)."""

import numpy as np
import pytest

from embedkit.heads.runner import ExperimentConfig, run_experiment
from embedkit.heads.trained import HeadConfig
from embedkit.metrics.compare import paired_changes, shrank_beyond_noise
from embedkit.predictions import read_predictions
from embedkit.runs import evaluate_predictions, read_record

from .conftest import make_cache

HEAD = HeadConfig(epochs=60, lrs=(1e-2,), weight_decays=(1e-2,))


def shifted(n=1500, seed=0):
    """Women are 10 % of training but half of validation and test, and their class signal lies in other
    features: ERM learns the men's features, so women are classified worse."""
    rng = np.random.default_rng(seed)
    split = np.array(["train"] * 900 + ["val"] * 200 + ["test"] * 400)
    sex = np.where(split == "train", np.where(rng.random(n) < 0.1, "F", "M"), np.where(np.arange(n) % 2, "F", "M"))
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 12)).astype(np.float32)
    men, women = sex == "M", sex == "F"
    x[men, y[men]] += 2.0
    x[women, 6 + y[women]] += 1.2
    x[women, y[women]] += 0.3
    return x, y, split, sex


@pytest.fixture(scope="module")
def shifted_cache(tmp_path_factory):
    x, y, split, sex = shifted()
    return make_cache(tmp_path_factory.mktemp("shift") / "c.h5", x, y, split, sex=sex)


def run(cache, tmp, method="linear", seeds=(0, 1), **kw):
    cfg = ExperimentConfig(model="synthetic", manifest=cache.with_suffix(".csv"), method=method, cache=cache,
                           runs_dir=tmp / "runs", dataset="toy", head=HEAD, n_boot=300, seeds=seeds, **kw)
    return run_experiment(cfg)


@pytest.mark.parametrize("mitigate", ["reweight", "resample", "groupdro", "adversarial", "temperature", "offsets"])
def test_every_intervention_runs_as_a_head(shifted_cache, tmp_path, mitigate):
    results = run(shifted_cache, tmp_path, mitigate=mitigate, attribute="sex")
    assert [r.path.parent.name for r in results] == [f"linear+{mitigate}-sex"] * 2
    record = results[0].record
    assert record["config"]["mitigate"] == mitigate and record["method"] == f"linear+{mitigate}-sex"
    assert record["metrics"]["accuracy"] > 0.5
    if mitigate in ("temperature", "offsets"):
        assert record["selection"]["post_processing"]["fitted_on"] == "validation"


def test_temperature_changes_calibration_not_predictions(shifted_cache, tmp_path):
    erm = read_predictions(run(shifted_cache, tmp_path)[0].path / "predictions.csv")
    cal = read_predictions(run(shifted_cache, tmp_path, mitigate="temperature")[0].path / "predictions.csv")
    assert (erm.proba.argmax(1) == cal.proba.argmax(1)).all() and not np.allclose(erm.proba, cal.proba)


def test_a_planted_shift_is_shrunk_beyond_noise(shifted_cache, tmp_path):
    def results(**kw):
        folders = [r.path for r in run(shifted_cache, tmp_path, **kw)]
        return [evaluate_predictions(read_predictions(f / "predictions.csv"), attributes="sex", n_boot=300, n_perm=50,
                                     seed=i, return_replicates=True) for i, f in enumerate(folders)]

    erm = results()
    assert erm[0]["significant"]["sex"]["f1_gap"] and erm[0]["fairness"]["sex"]["f1_gap"] > 0.05   # men better
    shrunk = {}
    for mitigate in ("reweight", "groupdro"):
        change = paired_changes(erm, results(mitigate=mitigate, attribute="sex"), "sex")
        shrunk[mitigate] = shrank_beyond_noise(change["|f1_gap|"])
    assert any(shrunk.values()), shrunk


def test_selection_strategies_are_recorded_and_use_validation(shifted_cache, tmp_path):
    head = HeadConfig(epochs=30, lrs=(1e-3, 1e-2), weight_decays=(1e-4, 1e-1))
    for strategy in ("loss", "overall", "worst-group", "pareto", "dto"):
        cfg = ExperimentConfig(model="synthetic", manifest=shifted_cache.with_suffix(".csv"), method="linear",
                               cache=shifted_cache, runs_dir=tmp_path / strategy, dataset="toy", head=head, n_boot=20,
                               selection=strategy, attribute="sex")
        sel = run_experiment(cfg)[0].record["selection"]
        assert sel["strategy"] == strategy
        if strategy != "loss":
            assert len(sel["candidates"]) == 4 and sel["attribute"] == "sex"
            chosen = sel["candidates"][[(p["lr"], p["weight_decay"]) for p in sel["sweep"]].index((sel["lr"], sel["weight_decay"]))]
            if strategy == "worst-group":
                assert chosen["worst_group_accuracy"] == max(c["worst_group_accuracy"] for c in sel["candidates"])


def test_a_fairness_aware_selection_is_a_new_run_for_another_attribute(shifted_cache, tmp_path):
    """The groups that choose the sweep point are part of the run's identity: the age run is not the sex run's."""
    sex, age = (run(shifted_cache, tmp_path, selection="worst-group", attribute=a, seeds=(0,))[0] for a in ("sex", "age"))
    assert not age.skipped and age.record["selection"]["attribute"] == "age"
    assert age.record["config_hash"] != sex.record["config_hash"]
    loss = [run(shifted_cache, tmp_path / "loss", attribute=a, seeds=(0,))[0] for a in ("sex", "age")]
    assert loss[1].skipped                                    # the loss chooses without groups: one run


def test_temperature_recovers_a_known_temperature():
    from embedkit.heads.temperature import fit_temperature

    rng = np.random.default_rng(0)
    z = rng.normal(size=(4000, 4)) * 3
    p = np.exp(z / 2.5) / np.exp(z / 2.5).sum(1, keepdims=True)
    y = np.array([rng.choice(4, p=row) for row in p])                  # labels drawn at temperature 2.5
    assert fit_temperature(np.log(np.exp(z) / np.exp(z).sum(1, keepdims=True)), y) == pytest.approx(2.5, rel=0.1)


def test_offsets_bring_a_groups_rates_to_the_pooled_ones_within_the_budget():
    from embedkit.heads.offsets import _rates, fit_offsets

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 3000)
    z = rng.normal(size=(3000, 3))
    z[np.arange(3000), y] += 1.5
    target = _rates(z.argmax(1), y, 3)                                  # an unbiased group's rates
    logp = z.copy()
    logp[:, 0] += 1.0                                                   # this group's scores over-predict class 0
    before = np.abs(_rates(logp.argmax(1), y, 3) - target).mean()
    b = fit_offsets(logp, y, target, max_drop=0.02)
    after = np.abs(_rates((logp + b).argmax(1), y, 3) - target).mean()
    assert after < before / 2 and ((logp + b).argmax(1) == y).mean() >= (logp.argmax(1) == y).mean() - 0.02


def test_group_dro_weights_the_worse_cell_up_and_gradient_reversal_negates():
    import torch

    from embedkit.heads.adversarial import _Reverse
    from embedkit.heads.groupdro import GroupDRO

    dro = GroupDRO(torch.tensor([0, 0, 1, 1]), members_per_seed=1, eta=0.5)
    losses = torch.tensor([[0.1, 0.1, 2.0, 2.0]])
    for _ in range(3):
        dro.loss(losses, None, torch.tensor([[0, 1, 2, 3]]))
    assert dro.q[0, 1] > dro.q[0, 0]
    x = torch.ones(3, requires_grad=True)
    (_Reverse.apply(x, 0.5) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-0.5, -1.0, -1.5]))


def test_the_cli_runs_erm_and_each_compatible_intervention(shifted_cache, tmp_path, capsys):
    from embedkit.cli.app import main

    assert main(["probe", "--model", "synthetic", "--cache-file", str(shifted_cache), "--manifest",
                 str(shifted_cache.with_suffix(".csv")), "--runs-dir", str(tmp_path / "r"), "--dataset", "toy",
                 "--head", "knn,linear", "--mitigate", "reweight,offsets", "--epochs", "5", "--seeds", "0"]) == 0
    assert "reweight trains a head, so it runs on linear and mlp, not knn" in capsys.readouterr().out
    made = sorted(p.name for p in (tmp_path / "r/toy/synthetic").iterdir())
    assert made == ["knn", "knn+offsets-sex", "linear", "linear+offsets-sex", "linear+reweight-sex"]
    assert main(["probe", "--model", "synthetic", "--cache-file", str(shifted_cache), "--manifest",
                 str(shifted_cache.with_suffix(".csv")), "--mitigate", "rewieght"]) == 2


def _cand(auc, groups, acc=0.5):
    return {"auc": auc, "accuracy": acc, "group_auc": dict(zip("MF", groups)), "worst_group_auc": min(groups),
            "worst_group_accuracy": acc}


def test_medfair_strategies_on_hand_made_tables():
    from embedkit.heads.selection import pareto_front, pick

    cands = [_cand(0.80, (0.90, 0.70)), _cand(0.78, (0.80, 0.76)), _cand(0.75, (0.78, 0.72)), _cand(0.79, (0.95, 0.60))]
    losses = [0.5, 0.6, 0.7, 0.4]
    assert pick("overall", cands, losses) == 0
    assert pick("loss", cands, losses) == 3
    assert pareto_front(np.array([list(c["group_auc"].values()) for c in cands])) == [0, 1, 3]   # 2 is dominated by 1
    assert pick("pareto", cands, losses) == 1                  # best worst group on the front
    # dto: columns divided by their maxima (0.95, 0.76) -> distances to (1, 1)
    scaled = np.array([[0.90 / 0.95, 0.70 / 0.76], [0.80 / 0.95, 1.0], [0.78 / 0.95, 0.72 / 0.76], [1.0, 0.60 / 0.76]])
    assert pick("dto", cands, losses) == int(np.argmin(np.sqrt(((1 - scaled) ** 2).sum(1))))


def test_ties_break_by_the_overall_metric_not_list_order():
    from embedkit.heads.selection import pick

    a, b = _cand(0.70, (0.8, 0.7)), _cand(0.75, (0.7, 0.8))   # mirror images: both tie on pareto and dto
    for strategy in ("pareto", "dto"):
        assert pick(strategy, [a, b], [0.5, 0.5]) == 1 and pick(strategy, [b, a], [0.5, 0.5]) == 0
    same = _cand(0.75, (0.7, 0.8), acc=0.6)
    assert pick("worst-group", [_cand(0.70, (0.7, 0.8), acc=0.6), same], [0.1, 0.9]) == 1


def test_reweighting_uses_kamiran_calders_weights_on_unbalanced_data():
    from embedkit.heads.mitigation import kamiran_calders

    group = np.array([0] * 70 + [1] * 30)
    y = np.array([0] * 60 + [1] * 10 + [0] * 10 + [1] * 20)
    w = kamiran_calders(group, y).numpy()
    n = 100
    for a, c, n_ac in ((0, 0, 60), (0, 1, 10), (1, 0, 10), (1, 1, 20)):
        expected = ((group == a).sum() / n) * ((y == c).sum() / n) / (n_ac / n)
        assert w[(group == a) & (y == c)] == pytest.approx(expected)
    assert w.mean() == pytest.approx(1.0)
    assert not np.allclose(w, (1 / np.bincount(group * 2 + y)[group * 2 + y]) / (1 / np.bincount(group * 2 + y)[group * 2 + y]).mean())


def test_a_seed_of_the_adversary_rerun_alone_gives_the_same_run(shifted_cache, tmp_path):
    both = run(shifted_cache, tmp_path / "both", mitigate="adversarial", attribute="sex")
    cfg = ExperimentConfig(model="synthetic", manifest=shifted_cache.with_suffix(".csv"), method="linear",
                           cache=shifted_cache, runs_dir=tmp_path / "alone", dataset="toy", head=HEAD, n_boot=300,
                           seeds=(1,), mitigate="adversarial", attribute="sex")
    alone = run_experiment(cfg)
    a = read_predictions(both[1].path / "predictions.csv").proba
    b = read_predictions(alone[0].path / "predictions.csv").proba
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_post_processing_maps_the_finished_base_runs_without_refitting_them(shifted_cache, tmp_path, monkeypatch):
    """Offsets on linear run the missing ERM runs first, then read them back: a second intervention refits
    nothing, and its probabilities are those of refitting the base in memory (to the 7 digits a file keeps)."""
    from embedkit.heads import base
    from embedkit.heads.trained import TrainedMethod

    temperature = run(shifted_cache, tmp_path, mitigate="temperature", attribute="sex")
    erm = [r.path for r in run(shifted_cache, tmp_path)]
    assert [p.parent.name for p in erm] == ["linear"] * 2 and all((p / "run.json").is_file() for p in erm)
    assert all(run(shifted_cache, tmp_path)[i].skipped for i in range(2))            # made by the intervention
    assert temperature[0].record["selection"]["lr"] == read_record(erm[0])["selection"]["lr"]

    refit = list(base.get("offsets").fit(*_inputs(shifted_cache, tmp_path, mitigate="offsets", attribute="sex")))

    def no_refit(*a, **k):
        raise AssertionError("the base head was refitted")

    monkeypatch.setattr(TrainedMethod, "fit", no_refit)
    offsets = run(shifted_cache, tmp_path, mitigate="offsets", attribute="sex")
    for r, f in zip(offsets, refit):
        p = read_predictions(r.path / "predictions.csv")
        np.testing.assert_allclose(p.proba, np.concatenate([f.proba["val"], f.proba["test"]]), atol=2e-6)
        assert r.record["selection"]["post_processing"] == f.selection["post_processing"]


def _inputs(cache, tmp, **kw):
    """What the runner hands a method's fit: the config, the store, its splits and the seeds."""
    from embedkit.heads import features
    from embedkit.heads.runner import ExperimentConfig

    cfg = ExperimentConfig(model="synthetic", manifest=cache.with_suffix(".csv"), method="linear", cache=cache,
                           runs_dir=tmp / "runs", dataset="toy", head=HEAD, n_boot=300, seeds=(0, 1), **kw)
    store, parts = features.load(cache, cfg.manifest, cfg.task)
    return cfg, store, parts, cfg.seeds
