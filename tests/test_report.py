"""The study report from run folders; missing methods leave visible gaps."""

import numpy as np

from embedkit.cli.app import main
from embedkit.report import summarise
from embedkit.runs import Predictions, write_predictions, write_record

CLASSES = ("Edema", "Effusion", "Pneumothorax")


def fake_run(root, model, method, seed, skill):
    rng = np.random.default_rng(seed)
    n = 120
    y = np.arange(n) % 3
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), y] += skill
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    sex = np.where((np.arange(n) // 3) % 2 == 0, "M", "F")
    age = np.where((np.arange(n) // 6) % 2 == 0, 30, 70)
    p = Predictions(np.array([f"i{i}" for i in range(n)]), np.array(["test"] * n), np.array(CLASSES)[y], sex, age,
                    proba, CLASSES)
    folder = root / "toy" / model / method / f"seed-{seed}"
    write_predictions(folder / "predictions.csv", p)
    write_record(folder, {"method": method, "model": model, "seed": seed})


def test_report_tables_figures_and_gaps(tmp_path, capsys):
    for seed in range(3):
        fake_run(tmp_path / "runs", "clip", "linear", seed, 2.0)
        fake_run(tmp_path / "runs", "gloria", "linear", seed, 0.5)
    fake_run(tmp_path / "runs", "clip", "zeroshot", 0, 0.2)
    groups = summarise(tmp_path / "runs", n_boot=100)
    clip = next(g for g in groups if g.model == "clip" and g.method == "linear")
    assert clip.summary["accuracy"]["n_seeds"] == 3 and clip.summary["accuracy"]["sd"] > 0
    assert main(["report", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "rep"), "--n-boot", "100"]) == 0
    md = (tmp_path / "rep/report.md").read_text()
    assert "| clip | " in md and "| gloria | — |" in md  # gloria has no zero-shot run: a visible gap
    assert "Fairness gaps, sex" in md and "eqodds floor" in md
    for fig in ("fig2a_accuracy", "fig2b_class_f1_full", "fig3a_var_f1", "fig3b_group_f1", "fig3c_gaps_full",
                "fig3d_gaps_zeroshot", "reliability_by_group"):
        assert (tmp_path / "rep/figures" / f"{fig}.png").stat().st_size > 1000
    page = (tmp_path / "rep/report.html").read_text()
    assert page.count("data:image/png;base64,") == 7 and "<table>" in page
