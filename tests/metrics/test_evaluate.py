"""The run-level evaluation: agreement with the per-metric functions, CIs, p-values, noise floor."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from embedkit.metrics import aggregate_seeds, eqodds, evaluate, f1_gap
from embedkit.metrics.classification import ece, ece_binned
from embedkit.metrics.fairness import ece_binned_gap, ece_gap

C = 6
CLASSES = tuple("ABCDEF")


def balanced_design(per_cell=10):
    """240 rows: 6 classes x 4 sex-age cells x 10, like the paper's test split."""
    y = np.repeat(np.arange(C), 4 * per_cell)
    sex = np.tile(np.repeat(["M", "F"], 2 * per_cell), C)
    age = np.tile(np.repeat(["young", "old", "young", "old"], per_cell), C)
    return y, sex, age


def paper(sex, age):
    """The paper's attributes as data: sex (M - F), age band (young - old) and their four cells."""
    cells = np.char.add(np.char.add(np.asarray(sex), "-"), np.asarray(age))
    return {"groups": {"sex": sex, "age": age, "sex_age": cells},
            "order": {"sex": ("M", "F"), "age": ("young", "old"),
                      "sex_age": ("M-young", "M-old", "F-young", "F-old")}}


def simulate(rng, y, signal=1.0, boost=None):
    logits = rng.normal(size=(len(y), C))
    logits[np.arange(len(y)), y] += signal if boost is None else signal + boost
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


def test_agrees_with_single_metric_functions():
    rng = np.random.default_rng(0)
    y, sex, age = balanced_design()
    proba = simulate(rng, y)
    pred = proba.argmax(1)
    r = evaluate(y, proba, **paper(sex, age), classes=CLASSES, n_boot=50, n_perm=50)
    assert r["n"] == 240
    assert r["accuracy"] == pytest.approx(np.mean(pred == y))
    assert list(r["f1"].values()) == pytest.approx(list(f1_score(y, pred, average=None)))
    assert r["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"))
    m = sex == "F"
    assert r["groups"]["sex"]["F"]["f1_macro"] == pytest.approx(f1_score(y[m], pred[m], average="macro"))
    assert r["groups"]["sex"]["F"]["ece"] == pytest.approx(ece(y[m], proba[m]))
    assert r["groups"]["sex"]["F"]["ece_binned"] == pytest.approx(ece_binned(y[m], proba[m]))
    assert r["fairness"]["sex"]["ece_gap"] == pytest.approx(ece_gap(y, proba, groups=sex, a="M", b="F"))
    assert r["fairness"]["age"]["ece_binned_gap"] == pytest.approx(ece_binned_gap(y, proba, groups=age, a="young", b="old"))
    assert r["fairness"]["sex"]["f1_gap"] == pytest.approx(f1_gap(y, pred, groups=sex, a="M", b="F", n_classes=C))
    assert r["fairness"]["age"]["eqodds"] == pytest.approx(eqodds(y, pred, groups=age, a="young", b="old", n_classes=C))
    cells = np.char.add(np.char.add(sex, "-"), age)
    cell_f1 = [f1_score(y[cells == c], pred[cells == c], average="macro") for c in np.unique(cells)]
    assert r["fairness"]["sex_age"]["f1_gap"] == pytest.approx(max(cell_f1) - min(cell_f1))   # k > 2: max - min
    # shape of the JSON: ci mirrors the metrics, null mirrors fairness
    assert set(r["ci"]["fairness"]["sex"]) == set(r["null"]["sex"]) == {"f1_gap", "eqodds", "ece_gap", "ece_binned_gap"}
    lo, hi = r["ci"]["accuracy"]
    assert lo <= r["accuracy"] <= hi
    assert r["excluded"]["sex"] == {"f1_gap": 0, "eqodds": 0}


def test_deterministic_and_seeded():
    rng = np.random.default_rng(1)
    y, sex, age = balanced_design()
    proba = simulate(rng, y)
    a = evaluate(y, proba, **paper(sex, age), classes=CLASSES, n_boot=100, n_perm=100, seed=3)
    b = evaluate(y, proba, **paper(sex, age), classes=CLASSES, n_boot=100, n_perm=100, seed=3)
    assert a == b


def test_bootstrap_ci_covers_true_accuracy_at_about_nominal_rate():
    y, sex, age = balanced_design()
    true_acc, hits, trials = 0.6, 0, 200
    rng = np.random.default_rng(0)
    for _ in range(trials):
        correct = rng.random(len(y)) < true_acc
        pred = np.where(correct, y, (y + 1 + rng.integers(0, C - 1, len(y))) % C)
        proba = np.full((len(y), C), 0.1)
        proba[np.arange(len(y)), pred] = 0.5
        r = evaluate(y, proba, **paper(sex, age), classes=CLASSES, n_boot=300, n_perm=10, seed=int(rng.integers(1e9)))
        lo, hi = r["ci"]["accuracy"]
        hits += lo <= true_acc <= hi
    assert 0.89 <= hits / trials <= 0.99


def test_permutation_p_values_are_uniform_without_effect_and_noise_floor_is_large():
    y, sex, age = balanced_design()
    rng = np.random.default_rng(0)
    ps, floors = [], []
    for _ in range(150):
        r = evaluate(y, simulate(rng, y, signal=1.2), **paper(sex, age), classes=CLASSES, n_boot=10, n_perm=200,
                     seed=int(rng.integers(1e9)))
        ps.append(r["p_value"]["sex"]["eqodds"])
        floors.append(r["null"]["sex"]["eqodds"])
    ps = np.array(ps)
    assert 0.02 <= np.mean(ps < 0.05) <= 0.10
    assert 0.40 <= np.mean(ps < 0.5) <= 0.60
    # the simulation: eqodds has a median of about 7.5 % with no true difference
    assert 0.05 <= np.median(floors) <= 0.10


def test_significance_holds_its_level_without_effect():
    """Percentile-bootstrap CIs alone over-flag signed gaps at this size, and never include 0 for the
    absolute gaps; the significance rule (CI excludes 0 and permutation p < 0.05) stays near 5 %."""
    y, sex, age = balanced_design()
    rng = np.random.default_rng(0)
    flags, any_flag = {"f1_gap": 0, "eqodds": 0, "ece_gap": 0}, 0
    for t in range(300):
        r = evaluate(y, simulate(rng, y, signal=1.2), **paper(sex, age), classes=CLASSES, n_boot=200, n_perm=200, seed=t)
        for k in flags:
            flags[k] += r["significant"]["sex"][k]
        any_flag += any(v for gaps in r["significant"].values() for v in gaps.values())
    assert all(v / 300 <= 0.08 for v in flags.values()), flags
    # the run's family (3 attributes x 4 gaps) under BH: no true difference anywhere, so any flag is a false one
    assert any_flag / 300 <= 0.08, any_flag


def test_q_adjusts_p_over_the_gaps_of_one_evaluation():
    from scipy.stats import false_discovery_control

    y, sex, age = balanced_design()
    boost = np.where(sex == "M", 1.5, -0.5)
    r = evaluate(y, simulate(np.random.default_rng(0), y, signal=1.0, boost=boost), **paper(sex, age), classes=CLASSES,
                 n_boot=100, n_perm=200)
    keys = [(a, g) for a, gaps in r["p_value"].items() for g in gaps]
    p = np.array([r["p_value"][a][g] for a, g in keys])
    q = np.array([r["q_value"][a][g] for a, g in keys])
    assert len(keys) == 12 and np.allclose(q, false_discovery_control(p)) and (q >= p).all()
    for a, g in keys:
        lo, hi = r["ci"]["fairness"][a][g]
        assert r["significant"][a][g] == ((lo > 0 or hi < 0) and r["q_value"][a][g] < 0.05)


def test_planted_gap_is_found():
    y, sex, age = balanced_design()
    rng = np.random.default_rng(0)
    boost = np.where(sex == "M", 1.5, -0.5)
    r = evaluate(y, simulate(rng, y, signal=1.0, boost=boost), **paper(sex, age), classes=CLASSES)
    assert r["fairness"]["sex"]["f1_gap"] > 0 and r["significant"]["sex"]["f1_gap"]
    assert r["p_value"]["sex"]["f1_gap"] < 0.01 and r["excess"]["sex"]["eqodds"] > 0


def test_aggregate_over_seeds_pools_replicates():
    y, sex, age = balanced_design()
    rng = np.random.default_rng(0)
    runs = [evaluate(y, simulate(rng, y), **paper(sex, age), classes=CLASSES, n_boot=100, n_perm=10,
                     return_replicates=True) for _ in range(3)]
    agg = aggregate_seeds(runs)
    accs = [r["accuracy"] for r in runs]
    assert agg["accuracy"]["mean"] == pytest.approx(np.mean(accs))
    assert agg["accuracy"]["sd"] == pytest.approx(np.std(accs, ddof=1))
    assert agg["accuracy"]["ci"][0] < min(accs) and agg["accuracy"]["ci"][1] > max(accs)
    assert agg["fairness"]["sex"]["eqodds"]["n_seeds"] == 3


def test_without_permutations_gaps_have_no_p_value_or_floor():
    """--n-perm 0 is allowed: the gaps keep their CIs and say nothing about chance (it raised a KeyError)."""
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 3, 300), rng.dirichlet(np.ones(3), 300)
    res = evaluate(y, p, groups={"sex": rng.choice(["M", "F"], 300)}, classes=("a", "b", "c"), n_boot=20, n_perm=0)
    assert res["p_value"]["sex"] == {k: None for k in res["p_value"]["sex"]} and len(res["p_value"]["sex"]) == 4
    assert res["null"]["sex"]["f1_gap"] is None and res["significant"]["sex"]["f1_gap"] is False
    assert None not in res["ci"]["fairness"]["sex"]["f1_gap"]


def test_without_resampling_every_interval_is_undefined():
    """--n-boot 0 is allowed too (it raised a KeyError): the observed values stand, with no CI, p-value or floor."""
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 3, 300), rng.dirichlet(np.ones(3), 300)
    res = evaluate(y, p, groups={"sex": rng.choice(["M", "F"], 300)}, classes=("a", "b", "c"), n_boot=0, n_perm=0)
    assert res["accuracy"] == pytest.approx(np.mean(p.argmax(1) == y))
    assert res["ci"]["accuracy"] == [None, None] and res["ci"]["fairness"]["sex"]["f1_gap"] == [None, None]
    assert res["p_value"]["sex"]["f1_gap"] is None and res["significant"]["sex"]["f1_gap"] is False
