"""Binary and multi-label findings through the heads: masked BCE, per-finding predictions, metrics, CLI."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import torch

from embedkit.cli.app import main
from embedkit.errors import EmbedkitError
from embedkit.heads.runner import ExperimentConfig, run_experiment
from embedkit.heads.trained import HeadConfig, masked_bce
from embedkit.predictions import read_predictions
from embedkit.spec import Task

from .conftest import make_cache

FINDINGS = ("Edema", "Effusion", "Mass")


@pytest.fixture
def multilabel_cache(tmp_path):
    """Three findings, each present in ~40 % of images and adding its own direction to the embedding;
    Mass is masked (uncertain) in every 7th image."""
    rng = np.random.default_rng(0)
    n, d = 360, 16
    present = rng.random((n, 3)) < 0.4
    x = (present @ (rng.normal(size=(3, d)) * 2) + 0.6 * rng.normal(size=(n, d))).astype(np.float32)
    split = np.array(["train"] * 250 + ["val"] * 50 + ["test"] * 60)
    path = make_cache(tmp_path / "ml.h5", x, np.zeros(n, dtype=int), split)
    manifest = path.with_suffix(".csv")
    rows = list(csv.DictReader(manifest.open()))
    for i, r in enumerate(rows):
        r["label"] = "|".join(f for f, p in zip(FINDINGS, present[i]) if p) or "No Finding"
        r["masked"] = "Mass" if i % 7 == 0 else ""
    with manifest.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path, manifest


def _cfg(path, manifest, tmp_path, method, task=Task(kind="multilabel"), **kw):
    return ExperimentConfig(model="synthetic", manifest=manifest, method=method, cache=path, seeds=(0,), task=task,
                            head=HeadConfig(epochs=30), n_boot=50, **{"runs_dir": tmp_path / "runs", **kw})


@pytest.mark.parametrize("method", ["linear", "mlp", "knn"])
def test_multilabel_heads_write_per_finding_predictions_and_metrics(multilabel_cache, tmp_path, method):
    path, manifest = multilabel_cache
    [result] = run_experiment(_cfg(path, manifest, tmp_path, method))
    pred = read_predictions(result.path / "predictions.csv")
    assert pred.classes == FINDINGS and pred.truth.shape == (110, 3) and pred.label is None
    header = (result.path / "predictions.csv").read_text().splitlines()[0].split(",")
    assert [c for c in header if c.startswith(("true_", "prob_"))] == [f"true_{f}" for f in FINDINGS] + [f"prob_{f}" for f in FINDINGS]
    assert np.isnan(pred.truth[:, 2]).sum() == sum(1 for i in range(250, 360) if i % 7 == 0)   # masked, not negative
    assert ((pred.proba >= 0) & (pred.proba <= 1)).all()
    m = result.record["metrics"]
    assert all(m["auroc"][f] > 0.85 for f in FINDINGS), m["auroc"]
    assert set(m["thresholds"]) == set(FINDINGS) and m["settings"]["threshold_rule"] == "f1"
    assert set(m["fairness"]["sex"]["auroc_gap"]) == set(FINDINGS) and "underdiagnosis_gap" in m["fairness"]["sex"]


def test_binary_task_and_the_evaluate_command(multilabel_cache, tmp_path, capsys):
    path, manifest = multilabel_cache
    [result] = run_experiment(_cfg(path, manifest, tmp_path, "linear", Task(kind="binary", positive="Effusion")))
    assert result.record["metrics"]["settings"]["findings"] == ["Effusion"]
    file = str(result.path / "predictions.csv")
    assert main(["evaluate", file, "--json", "--n-boot", "20", "--n-perm", "20", "--threshold", "youden"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["auroc"]["Effusion"] == pytest.approx(result.record["metrics"]["auroc"]["Effusion"])
    assert out["settings"]["threshold_rule"] == "youden"
    assert main(["evaluate", file, "--n-boot", "20", "--n-perm", "20"]) == 0
    assert "underdiagnosis" in capsys.readouterr().out
    assert main(["evaluate", file, "--threshold", "fpr:2"]) == 2


def test_probe_command_with_a_multilabel_task(multilabel_cache, tmp_path, capsys):
    path, manifest = multilabel_cache
    argv = ["probe", "--model", "synthetic", "--manifest", str(manifest), "--cache-file", str(path), "--runs-dir",
            str(tmp_path / "r"), "--head", "linear,knn", "--epochs", "5", "--seeds", "0", "--task", "multilabel"]
    assert main(argv) == 0
    assert "test macro AUROC" in capsys.readouterr().out
    assert main(argv[:-2] + ["--task", "binary"]) == 2
    assert "--positive" in capsys.readouterr().err


def test_a_run_of_another_task_is_never_replaced(multilabel_cache, tmp_path, capsys):
    """Another kind, or a binary task for another finding, in the same run folder is refused (one task per runs
    folder, as the report reads them); another threshold rule is a setting of the same task: the run reruns."""
    path, manifest = multilabel_cache
    [kept] = run_experiment(_cfg(path, manifest, tmp_path, "knn", Task(kind="binary", positive="Effusion")))
    held = (kept.path / "predictions.csv").read_bytes()
    for other in (Task(kind="binary", positive="Edema"), Task(kind="multilabel")):
        with pytest.raises(EmbedkitError, match=r"holds a binary \(Effusion\) run, which a .* run would replace"):
            run_experiment(_cfg(path, manifest, tmp_path, "knn", other))
    assert (kept.path / "predictions.csv").read_bytes() == held
    argv = ["probe", "--model", "synthetic", "--manifest", str(manifest), "--cache-file", str(path), "--runs-dir",
            str(tmp_path / "runs"), "--head", "knn", "--task", "multilabel"]
    assert main(argv) == 2
    assert "(--runs-dir; study: [paths] runs_dir)" in capsys.readouterr().err      # printed as written, not as markup
    [again] = run_experiment(_cfg(path, manifest, tmp_path, "knn", Task(kind="binary", positive="Effusion",
                                                                        threshold="youden")))
    assert not again.skipped and again.path == kept.path


def test_a_runs_folder_holds_one_kind_of_task_refused_before_any_work(tmp_path, capsys):
    """Classes and findings runs in one runs folder make a folder no report reads: a findings run of another head
    beside multiclass runs (and the reverse) is refused before training, not at the report."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    path = make_cache(tmp_path / "mc.h5", (np.eye(3)[y] + 0.3 * rng.normal(size=(120, 3))).astype(np.float32), y,
                      np.array(["train"] * 80 + ["val"] * 20 + ["test"] * 20))
    manifest = path.with_suffix(".csv")
    binary = Task(kind="binary", positive="Edema")
    run_experiment(_cfg(path, manifest, tmp_path, "knn", Task()))
    with pytest.raises(EmbedkitError, match=r"runs: holds multiclass runs \(.*knn.*\); a binary run beside them"):
        run_experiment(_cfg(path, manifest, tmp_path, "linear", binary))
    assert not (tmp_path / "runs" / manifest.stem / "synthetic" / "linear").exists()
    [other] = run_experiment(_cfg(path, manifest, tmp_path, "linear", binary, runs_dir=tmp_path / "findings"))
    with pytest.raises(EmbedkitError, match=r"findings: holds binary \(Edema\) runs .* a multiclass run beside"):
        run_experiment(_cfg(path, manifest, tmp_path, "knn", Task(), runs_dir=tmp_path / "findings"))
    argv = ["probe", "--model", "synthetic", "--manifest", str(manifest), "--cache-file", str(path), "--runs-dir",
            str(tmp_path / "runs"), "--head", "mlp", "--task", "multilabel"]
    assert main(argv) == 2
    assert "holds multiclass runs" in capsys.readouterr().err
    assert main(argv[:-2]) == 0 and other.path.parent.parent.parent.parent == tmp_path / "findings"


def test_a_multilabel_manifest_is_refused_by_a_multiclass_run_and_interventions_say_why(multilabel_cache, tmp_path):
    path, manifest = multilabel_cache
    with pytest.raises(EmbedkitError, match="give --task multilabel"):
        run_experiment(_cfg(path, manifest, tmp_path, "linear", Task()))
    with pytest.raises(EmbedkitError, match="a multi-label image has several"):
        run_experiment(_cfg(path, manifest, tmp_path, "linear", mitigate="reweight"))
    with pytest.raises(EmbedkitError, match="use reweight, resample, groupdro"):
        run_experiment(_cfg(path, manifest, tmp_path, "linear", Task(kind="binary", positive="Mass"), mitigate="offsets"))
    with pytest.raises(EmbedkitError, match="finding\\(s\\) Nodule appear in no row"):
        run_experiment(_cfg(path, manifest, tmp_path, "linear", Task(kind="multilabel", findings=("Edema", "Nodule"))))


def testmasked_bce_averages_over_the_labelled_findings_only():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    target = torch.tensor([[1.0, float("nan"), 0.0]])
    expected = (torch.nn.functional.softplus(torch.tensor(-2.0)) + torch.nn.functional.softplus(torch.tensor(0.5))) / 2
    assert masked_bce(logits, target).item() == pytest.approx(expected.item())


def test_the_report_of_a_findings_task(multilabel_cache, tmp_path):
    """Figures, the findings in words, every gap in the tables and the results table; a runs folder mixing
    multiclass and findings runs is refused."""
    import pandas as pd

    from embedkit.report import build_report

    path, manifest = multilabel_cache
    for method in ("linear", "knn"):
        run_experiment(_cfg(path, manifest, tmp_path, method))
    md = build_report(tmp_path / "runs", tmp_path / "report", n_boot=50, attributes="sex,age")
    text = md.read_text()
    assert "gap tests are beyond chance" in text and "underdiagnosis_gap" in text and "AUROC Mass" in text
    assert {p.name for p in (tmp_path / "report/figures").iterdir()} == {
        "auroc_by_group.png", "underdiagnosis_by_group.png", "findings.png"}
    results = pd.read_csv(tmp_path / "report/results.csv")
    auroc = results[(results.metric == "auroc") & (results.group == "Edema") & (results.method == "linear")]
    assert len(auroc) == 1 and 0.85 < auroc.value.iloc[0] <= 1
    gaps = results[results.metric.str.startswith("auroc_gap/")]
    assert gaps.q.notna().all() and len(gaps) == 2 * 2 * 3          # methods x attributes x findings
    import embedkit

    table = embedkit.results(tmp_path / "runs", attributes="sex,age", n_boot=50)     # the same numbers as data
    assert len(table) == len(results)
    assert np.allclose(table.value.astype(float), results.value.astype(float), equal_nan=True)
    assert main(["results", "--runs-dir", str(tmp_path / "runs"), "--attributes", "sex,age", "--n-boot", "50",
                 "--out", str(tmp_path / "t.parquet"), "--format", "parquet"]) == 0
    assert len(pd.read_parquet(tmp_path / "t.parquet")) == len(results)
    run_experiment(ExperimentConfig(model="synthetic", manifest=manifest, method="linear", cache=path,
                                    runs_dir=tmp_path / "runs", dataset="other", seeds=(0,), task=Task(kind="binary", positive="Edema"),
                                    head=HeadConfig(epochs=2), n_boot=10))
    md = build_report(tmp_path / "runs", tmp_path / "report2", n_boot=20, attributes="sex,age")
    assert md.is_file()


def test_zero_shot_findings_are_prompt_pairs(tmp_path):
    """CheXzero's pairs: each finding's positive prompts point along its direction, its negative ("no:") side
    away from it, so the pair's softmax ranks the images that have it first; No Finding is prod(1 - p)."""
    from embedkit.prompts import pair_classes

    from .conftest import text_set

    rng = np.random.default_rng(1)
    n, d = 300, 16
    present = rng.random((n, 3)) < 0.4
    dirs = rng.normal(size=(3, d))
    x = (present @ (dirs * 2) + 0.6 * rng.normal(size=(n, d))).astype(np.float32)
    classes = pair_classes(FINDINGS)
    prompts = {}
    for i, c in enumerate(classes):
        sign, f = (1, c) if c in FINDINGS else (-1, c.removeprefix("no:"))
        prompts[i] = np.stack([sign * dirs[FINDINGS.index(f)] + 0.05 * rng.normal(size=d) for _ in range(4)]).astype(np.float32)
    text = {fmt: text_set(prompts) for fmt in ("clip", "gloria", "cxrclip")}
    split = np.array(["train"] * 200 + ["val"] * 50 + ["test"] * 50)
    path = make_cache(tmp_path / "zs.h5", x, np.zeros(n, dtype=int), split, text=text, classes=classes)
    manifest = path.with_suffix(".csv")
    rows = list(csv.DictReader(manifest.open()))
    for i, r in enumerate(rows):
        r["label"] = "|".join(f for f, p in zip(FINDINGS, present[i]) if p) or "No Finding"
    with manifest.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    task = Task(kind="multilabel", findings=(*FINDINGS, "No Finding"))
    [result] = run_experiment(_cfg(path, manifest, tmp_path, "zeroshot", task))
    m = result.record["metrics"]
    assert all(m["auroc"][f] > 0.9 for f in FINDINGS) and m["auroc"]["No Finding"] > 0.8, m["auroc"]
    sel = result.record["selection"]
    assert sel["prompt_pairs"]["Edema"] == {"positive": 4, "negative": 4} and sel["no_finding"].startswith("prod")
    pred = read_predictions(result.path / "predictions.csv")
    p_nf = np.prod(1 - pred.proba[:, :3], 1)
    assert np.allclose(pred.proba[:, 3], p_nf, atol=1e-6)


@pytest.mark.slow
def test_extract_then_zeroshot_on_a_multilabel_phantom(tmp_path, capsys):
    """End to end on real (tiny) encoders: a multi-label phantom's store holds each finding's prompt pair."""
    from embedkit.cache import read_cache

    assert main(["data", "phantom", "--out", str(tmp_path / "p"), "--task", "multilabel", "--per-group", "5",
                 "--size", "32"]) == 0
    manifest = str(tmp_path / "p/manifest.csv")
    assert main(["extract", "--model", "clip-tiny", "--manifest", manifest, "--cache-dir", str(tmp_path / "c")]) == 0
    store = read_cache(next((tmp_path / "c").glob("*.h5")))
    assert "no:Edema" in store.classes and "Edema|Effusion" not in store.classes
    assert any(p == "no pulmonary edema." for p in store.text["cxrclip"].prompts)
    assert main(["zeroshot", "--model", "clip-tiny", "--manifest", manifest, "--cache-dir", str(tmp_path / "c"),
                 "--runs-dir", str(tmp_path / "r"), "--seeds", "0", "--task", "multilabel"]) == 0
    assert "test macro AUROC" in capsys.readouterr().out


@pytest.mark.parametrize("mitigate", ["reweight", "resample", "groupdro"])
def test_interventions_balance_group_by_label_cells_of_a_binary_task(multilabel_cache, tmp_path, mitigate):
    """On a binary task the (group x label) cells are sex x {positive, negative, masked}; the intervention's
    run keeps the finding's AUROC (the features separate it for both sexes)."""
    from embedkit.heads.groups import label_codes
    from embedkit.heads.features import load

    path, manifest = multilabel_cache
    task = Task(kind="binary", positive="Mass")
    _, parts = load(path, manifest, task)
    codes, n = label_codes(parts["train"])
    assert n == 3 and set(np.unique(codes)) == {0, 1, 2}                       # Mass is masked in every 7th image
    [result] = run_experiment(_cfg(path, manifest, tmp_path, "linear", task, mitigate=mitigate, attribute="sex"))
    assert result.path.parent.name == f"linear+{mitigate}-sex"
    assert result.record["metrics"]["auroc"]["Mass"] > 0.85


def test_the_findings_report_compares_a_binary_intervention_with_erm(multilabel_cache, tmp_path):
    """As for classes: the change in macro AUROC and in each |gap| (underdiagnosis, the finding's AUROC and
    equalized odds) on the same test images, with paired CIs and a verdict adjusted over the table."""
    import shutil

    from embedkit.report import build_report

    path, manifest = multilabel_cache
    task = Task(kind="binary", positive="Effusion")
    [erm] = run_experiment(_cfg(path, manifest, tmp_path, "linear", task))
    run_experiment(_cfg(path, manifest, tmp_path, "linear", task, mitigate="reweight", attribute="sex"))
    shutil.copytree(erm.path, erm.path.parent.parent / "linear+copy-sex" / "seed-0")     # ERM against itself: no change
    [edema] = run_experiment(_cfg(path, manifest, tmp_path, "linear", Task(kind="binary", positive="Edema"),
                                  dataset="edema"))                                # another finding beside it
    shutil.copytree(edema.path, edema.path.parent.parent / "linear+copy-sex" / "seed-0")
    text = build_report(tmp_path / "runs", tmp_path / "report", n_boot=50, attributes="sex").read_text()
    cells = lambda line: [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]      # noqa: E731  (\| escaped)
    table = text.split("| model | head | intervention", 1)[1].split("\n\n", 1)[0].splitlines()
    header = cells("| model | head | intervention" + table[0])
    assert header[4:8] == ["Δ macro AUROC", r"Δ \|underdiagnosis_gap\|", r"Δ \|auroc_gap\|", r"Δ \|eqodds\|"]
    rows = table[2:]
    assert all(len(cells(line)) == len(header) == 9 for line in rows)
    assert len(rows) == 3 and "adjusted over the table's 9 gap changes" in text
    copies = [line for line in table[2:] if cells(line)[2] == "copy"]
    assert len(copies) == 2 and all(r.count("+0.000 [+0.000, +0.000]") == 4 and "no gap shrank" in r for r in copies)
    assert "of 3 intervention runs shrank" in text or "None of the 3 intervention runs" in text
