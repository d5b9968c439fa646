"""Fairness over any attribute: k-group gaps against an independent oracle, two groups as before,
small groups left out, attribute declarations parsed and banded."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from embedkit.attributes import parse
from embedkit.errors import EmbedkitError
from embedkit.metrics import evaluate


def _oracle(y, pred, proba, groups, order, C):
    """Plain loops over groups and classes: the issue's definitions, written independently."""
    f1s, tprs, fprs, eces = {}, {}, {}, {}
    for g in order:
        m = groups == g
        yt, yp = y[m], pred[m]
        present = [c for c in range(C) if (yt == c).any()]
        per = f1_score(yt, yp, labels=list(range(C)), average=None, zero_division=0)
        f1s[g] = np.mean([per[c] for c in present])
        tprs[g] = {c: ((yp == c) & (yt == c)).sum() / (yt == c).sum() for c in present}
        fprs[g] = {c: ((yp == c) & (yt != c)).sum() / (yt != c).sum() for c in range(C) if (yt != c).any()}
        conf = proba[m].max(1)
        eces[g] = np.mean(np.abs(conf - (yp == yt)))
    terms = []
    for rates in (tprs, fprs):
        for c in range(C):
            vals = [rates[g][c] for g in order if c in rates[g]]
            if len(vals) >= 2:
                terms.append(max(vals) - min(vals))
    return {"f1_gap": max(f1s.values()) - min(f1s.values()), "eqodds": np.mean(terms),
            "ece_gap": max(eces.values()) - min(eces.values())}


def _run(n=600, C=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    race = np.array(["Asian", "Black", "White", "Other"][:k])[rng.integers(0, k, n)]
    logits = rng.normal(size=(n, C)) + 2.0 * np.eye(C)[y] * (1 + (race == "White"))[:, None]
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, proba, race


@pytest.mark.parametrize("k", [3, 4])
def test_k_group_gaps_equal_an_independent_oracle(k):
    y, proba, race = _run(k=k)
    order = tuple(sorted(set(race)))
    res = evaluate(y, proba, groups={"race": race}, classes=("a", "b", "c", "d"), n_boot=50, n_perm=50)
    want = _oracle(y, proba.argmax(1), proba, race, order, 4)
    for gap, value in want.items():
        assert res["fairness"]["race"][gap] == pytest.approx(value, abs=1e-9)
    assert set(res["groups"]["race"]) == set(order)
    assert res["settings"]["attributes"]["race"]["sign"] == "max - min"
    assert res["null"]["race"]["f1_gap"] > 0 and res["p_value"]["race"]["f1_gap"] < 0.05   # White planted better


def test_two_groups_keep_the_signed_definition():
    y, proba, race = _run(k=2)
    res = evaluate(y, proba, groups={"race": race}, order={"race": ("Black", "Asian")}, classes=tuple("abcd"),
                   n_boot=20, n_perm=20)
    m_a, m_b = race == "Black", race == "Asian"
    pred = proba.argmax(1)
    fa = f1_score(y[m_a], pred[m_a], average=None, labels=range(4), zero_division=0)
    fb = f1_score(y[m_b], pred[m_b], average=None, labels=range(4), zero_division=0)
    assert res["fairness"]["race"]["f1_gap"] == pytest.approx(np.mean(fa - fb), abs=1e-9)
    assert res["settings"]["attributes"]["race"]["sign"] == "Black - Asian"


def test_a_small_group_is_reported_but_left_out_of_the_gaps():
    y, proba, race = _run(n=400, k=3)
    race[:5] = "Tiny"
    race[5:] = np.where(race[5:] == "Tiny", "Asian", race[5:])
    with pytest.warns(UserWarning, match="Tiny"):
        res = evaluate(y, proba, groups={"race": race}, classes=tuple("abcd"), n_boot=20, n_perm=20)
    keep = race != "Tiny"
    want = _oracle(y[keep], proba.argmax(1)[keep], proba[keep], race[keep], ("Asian", "Black", "White"), 4)
    assert res["fairness"]["race"]["f1_gap"] == pytest.approx(want["f1_gap"], abs=1e-9)
    assert res["groups"]["race"]["Tiny"]["n"] == 5
    assert res["settings"]["attributes"]["race"]["too_small"] == ["Tiny"]


def test_declarations_band_numbers_and_cross_attributes():
    attrs = parse("sex,age:40,60,80,race,sex*age")
    assert [a.name for a in attrs] == ["sex", "age", "race", "sex_age"]
    data = {"sex": np.array(["F", "M", "M", ""]), "age": np.array(["39", "40", "85", "70"]),
            "race": np.array(["B", "A", "", "A"])}
    age = attrs[1].labels(data)
    assert age.tolist() == ["<40", "40-60", ">=80", "60-80"]
    assert attrs[1].order(age) == ("<40", "40-60", "60-80", ">=80")
    assert attrs[3].labels(data).tolist() == ["F-<40", "M-40-60", "M->=80", ""]
    assert attrs[2].labels(data).tolist() == ["B", "A", "", "A"]
    young_old = parse("age")[0]
    assert young_old.labels({"age": np.array(["59", "60"])}).tolist() == ["young", "old"]
    assert parse(None)[2].name == "sex_age"
    assert parse("sex")[0].order(np.array(["F", "M"])) == ("M", "F")
    with pytest.raises(EmbedkitError, match="cut points must be numbers"):
        parse("age:old")
    with pytest.raises(EmbedkitError, match="not a number"):
        parse("race:50")[0].labels({"race": np.array(["White"])})
