"""Finding metrics held to scikit-learn, fairlearn and independent loops, on random data with 2 and k groups."""

from __future__ import annotations

import numpy as np
import pytest
from fairlearn.metrics import MetricFrame, equalized_odds_difference, false_positive_rate, true_positive_rate
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from embedkit.metrics.findings import evaluate_findings
from embedkit.metrics.ranking import choose_threshold

FINDINGS = ("Effusion", "Edema", "Mass")


def _data(n=300, seed=0, k=2, mask=0.1):
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, 3)) < [0.3, 0.2, 0.4]).astype(float)
    prob = np.clip(0.35 * truth + rng.random((n, 3)) * 0.7, 0, 1).round(2)        # rounded: ties
    truth[rng.random((n, 3)) < mask] = np.nan                                       # masked, not negative
    group = np.array([f"g{i}" for i in rng.integers(0, k, n)])
    return truth, prob, group


@pytest.mark.parametrize("k", [2, 3])
def test_every_metric_equals_sklearn_and_fairlearn(k):
    truth, prob, group = _data(k=k)
    thr = np.array([0.5, 0.45, 0.6])
    res = evaluate_findings(truth, prob, findings=FINDINGS, thresholds=thr, groups={"g": group}, n_boot=20, n_perm=20)
    for f, name in enumerate(FINDINGS):
        ok = np.isfinite(truth[:, f])
        y, s, pred = truth[ok, f], prob[ok, f], (prob[ok, f] >= thr[f]).astype(int)
        assert res["auroc"][name] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert res["auprc"][name] == pytest.approx(average_precision_score(y, s), abs=1e-12)
        frame = MetricFrame(metrics={"tpr": true_positive_rate, "fpr": false_positive_rate}, y_true=y, y_pred=pred,
                            sensitive_features=group[ok])
        assert res["tpr"][name] == pytest.approx(frame.overall["tpr"]) and res["fpr"][name] == pytest.approx(frame.overall["fpr"])
        for g in sorted(set(group)):
            sel = group[ok] == g
            assert res["groups"]["g"][g]["auroc"][name] == pytest.approx(roc_auc_score(y[sel], s[sel]), abs=1e-12)
            assert res["groups"]["g"][g]["tpr"][name] == pytest.approx(frame.by_group.loc[g, "tpr"])
            assert res["groups"]["g"][g]["fpr"][name] == pytest.approx(frame.by_group.loc[g, "fpr"])
        eqodds = equalized_odds_difference(y, pred, sensitive_features=group[ok], agg="mean")
        assert res["fairness"]["g"]["eqodds"][name] == pytest.approx(eqodds, abs=1e-12)
        aucs = [roc_auc_score(y[group[ok] == g], s[group[ok] == g]) for g in sorted(set(group))]
        assert res["fairness"]["g"]["auroc_gap"][name] == pytest.approx(max(aucs) - min(aucs), abs=1e-12)
        assert res["equity"]["g"]["worst_auroc"][name] == pytest.approx(min(aucs), abs=1e-12)
        overall = roc_auc_score(y, s)
        es = overall / (1 + sum(abs(a - overall) for a in aucs))
        assert res["equity"]["g"]["es_auc"][name] == pytest.approx(es, abs=1e-12)
        assert res["ci"]["auroc"][name][0] <= res["auroc"][name] <= res["ci"]["auroc"][name][1]


def test_underdiagnosis_is_the_share_of_sick_images_called_healthy():
    truth, prob, group = _data(k=3, mask=0.0)
    thr = np.array([0.5, 0.45, 0.6])
    res = evaluate_findings(truth, prob, findings=FINDINGS, thresholds=thr, groups={"g": group}, n_boot=10, n_perm=10)
    sick, healthy = (truth == 1).any(1), ~(prob >= thr).any(1)
    rates = {g: (sick & healthy & (group == g)).sum() / (sick & (group == g)).sum() for g in sorted(set(group))}
    for g, rate in rates.items():
        assert res["groups"]["g"][g]["underdiagnosis"] == pytest.approx(rate)
    assert res["fairness"]["g"]["underdiagnosis_gap"] == pytest.approx(max(rates.values()) - min(rates.values()))
    assert res["underdiagnosis"] == pytest.approx((sick & healthy).sum() / sick.sum())


def test_with_a_no_finding_label_underdiagnosis_is_its_false_positive_rate():
    truth, prob, group = _data(mask=0.0)
    findings = ("No Finding", "Edema", "Mass")
    thr = np.array([0.5, 0.5, 0.5])
    res = evaluate_findings(truth, prob, findings=findings, thresholds=thr, groups={"g": group}, n_boot=10, n_perm=10)
    for g in ("g0", "g1"):
        sel = group == g
        assert res["groups"]["g"][g]["underdiagnosis"] == pytest.approx(
            false_positive_rate(truth[sel, 0], (prob[sel, 0] >= 0.5).astype(int)))


def test_a_group_without_positives_is_undefined_with_its_reason_never_zero():
    truth, prob, group = _data(k=3, mask=0.0)
    truth[group == "g2", 1] = 0.0                                          # no Edema in g2
    res = evaluate_findings(truth, prob, findings=FINDINGS, thresholds=[0.5] * 3, groups={"g": group}, n_boot=10, n_perm=10)
    assert res["groups"]["g"]["g2"]["auroc"]["Edema"] is None
    assert res["undefined"]["groups/g/g2/auroc/Edema"] == "no positive image of the finding in this group"
    assert res["groups"]["g"]["g2"]["tpr"]["Edema"] is None                 # no positives: TPR undefined too
    aucs = [roc_auc_score(truth[group == g, 1], prob[group == g, 1]) for g in ("g0", "g1")]
    assert res["fairness"]["g"]["auroc_gap"]["Edema"] == pytest.approx(abs(aucs[0] - aucs[1]))   # over defined groups


@pytest.mark.parametrize("rule", ["f1", "youden", "fpr:0.2"])
def test_thresholds_are_the_best_candidate_on_validation(rule):
    truth, prob, _ = _data(mask=0.0)
    y, s = truth[:, 0], prob[:, 0]
    t = choose_threshold(y, s, rule)
    candidates = np.unique(s)

    def value(c):
        pred = s >= c
        tpr, fpr = (pred & (y == 1)).sum() / (y == 1).sum(), (pred & (y == 0)).sum() / (y == 0).sum()
        if rule == "f1":
            return f1_score(y, pred)
        return tpr - fpr if rule == "youden" else (tpr if fpr <= 0.2 else -1)

    assert value(t) == pytest.approx(max(value(c) for c in candidates))


def test_a_planted_auroc_gap_is_found_and_a_null_one_is_not():
    rng = np.random.default_rng(5)
    n = 600
    group = np.where(rng.random(n) < 0.5, "F", "M")
    truth = (rng.random((n, 1)) < 0.4).astype(float)
    noise = np.where(group == "F", 1.5, 0.5)[:, None]
    planted = 1 / (1 + np.exp(-(2 * truth - 1 + noise * rng.normal(size=(n, 1)))))
    fair = 1 / (1 + np.exp(-(2 * truth - 1 + rng.normal(size=(n, 1)))))
    patient = np.arange(n) // 2
    for prob, expect in ((planted, True), (fair, False)):
        res = evaluate_findings(truth, prob, findings=("Effusion",), thresholds=[0.5], groups={"sex": group},
                                patient_id=patient, n_boot=200, n_perm=200)
        assert res["significant"]["sex"]["auroc_gap"]["Effusion"] is expect


def test_the_last_groups_sums_by_difference_are_its_own(monkeypatch):
    """Where every row (and patient) has a compared group, the last group's counts are all rows' less the others':
    every estimate, interval and p-value is the one its own sums give."""
    from embedkit.metrics import findings

    truth, prob, group = _data(n=400, k=3)
    patients = np.arange(400) // 2

    def run():
        return evaluate_findings(truth, prob, findings=FINDINGS, thresholds=[0.5, 0.45, 0.6], groups={"g": group},
                                 patient_id=patients, n_boot=40, n_perm=40)

    by_difference = run()
    built = findings._Evaluation.__init__

    def direct(self, *args, **kwargs):
        built(self, *args, **kwargs)
        assert self.complete == {"g": True}
        self.complete = {"g": False}

    monkeypatch.setattr(findings._Evaluation, "__init__", direct)
    assert run() == by_difference
