"""The study report from run folders; missing methods leave visible gaps."""

import numpy as np

from embedkit.cli.app import main
from embedkit.report import summarise
from embedkit.predictions import Predictions, write_predictions
from embedkit.runs import write_record

CLASSES = ("Edema", "Effusion", "Pneumothorax")


def fake_run(root, model, method, seed, skill, record=None):
    rng = np.random.default_rng(seed)
    n = 120
    y = np.arange(n) % 3
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), y] += skill
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    sex = np.where((np.arange(n) // 3) % 2 == 0, "M", "F")
    age = np.where((np.arange(n) // 6) % 2 == 0, 30, 70)
    p = Predictions(np.array([f"i{i}" for i in range(n)]), np.array(["test"] * n), np.array(CLASSES)[y], proba, CLASSES,
                    {"sex": sex, "age": age.astype(str)})
    folder = root / "toy" / model / method / f"seed-{seed}"
    write_predictions(folder / "predictions.csv", p)
    write_record(folder, {"method": method, "model": model, "seed": seed, **(record or {})})


def test_report_tables_figures_and_gaps(tmp_path, capsys, recwarn):
    for seed in range(3):
        fake_run(tmp_path / "runs", "clip", "linear", seed, 2.0)
        fake_run(tmp_path / "runs", "gloria", "linear", seed, 0.5)
    fake_run(tmp_path / "runs", "clip", "zeroshot", 0, 0.2)
    fake_run(tmp_path / "runs", "clip", "lora", 0, 2.0, {"init": {"kind": "probe"}, "selection": {"best_epoch": 0}})
    groups = summarise(tmp_path / "runs", n_boot=100)
    clip = next(g for g in groups if g.model == "clip" and g.method == "linear")
    assert clip.summary["accuracy"]["n_seeds"] == 3 and clip.summary["accuracy"]["sd"] > 0
    assert main(["report", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "rep"), "--n-boot", "100"]) == 0
    md = (tmp_path / "rep/report.md").read_text()
    assert "| clip | " in md and "| gloria | — |" in md  # gloria has no zero-shot run: a visible gap
    assert "Fairness gaps, sex" in md and "| floor | p | q |" in md
    assert "The family of tests holds 48 fairness gaps" in md        # 4 (model, method) x 3 attributes x 4 gaps
    assert "lora (= linear probe)" in md and " ‡" in md and "1 of 1 fine-tuning runs kept the linear probe" in md
    for fig in ("fig2a_accuracy", "fig3a_var_f1", "fig3b_group_f1", "fig3d_gaps_zeroshot", "reliability_by_group"):
        assert (tmp_path / "rep/figures" / f"{fig}.png").stat().st_size > 1000
    for fig in ("fig2b_class_f1_full", "fig3c_gaps_full"):   # no full fine-tuning run: left out, and said why
        assert not (tmp_path / "rep/figures" / f"{fig}.png").exists()
    assert "Fig. 2b (per-class F1 after full fine-tuning) is left out: no full fine-tuning runs." in md
    page = (tmp_path / "rep/report.html").read_text()
    assert page.count("data:image/png;base64,") == 6 and "<table>" in page  # 5 paper figures + findings
    assert "ECE per group of sex_age" in md and "the four pairs with the largest spread" in md   # all pairs, as data
    from embedkit.report.check import problems

    assert problems(tmp_path / "rep/report.html") == []          # every figure there, drawn, and fitting its box
    # a bar's "= probe" marker sits inside its axes whatever the metric's scale (at data y 0.02 it floated far
    # above var F1's axes, and matplotlib could not lay the figure out)
    assert not [w for w in recwarn if "Tight layout not applied" in str(w.message)]


def test_report_check_flags_missing_empty_and_oversized_figures(tmp_path, capsys):
    import base64
    import io

    from PIL import Image

    from embedkit.report.check import main, problems

    def png(width, height, drawn=True):
        image = Image.new("L", (width, height), 255)
        if drawn:
            image.paste(0, (10, 10, width // 2, height // 2))
        buf = io.BytesIO()
        image.save(buf, "PNG")
        return base64.b64encode(buf.getvalue()).decode()

    figures = {"fine": png(900, 600), "blank": png(900, 600, drawn=False), "wide": png(3000, 500),
               "tall": png(1000, 4000), "absent": ""}
    page = tmp_path / "report.html"
    page.write_text("".join(f'<img alt="{k}" src="data:image/png;base64,{v}">' for k, v in figures.items()))
    found = problems(page)
    assert [line.split(":")[0] for line in found] == ["blank", "wide", "tall", "absent"]
    assert "empty" in found[0] and "overflows its box: 3000 px wide" in found[1] and "missing" in found[3]
    assert main([str(page)]) == 1 and "4 problem(s)" in capsys.readouterr().out


class _Outline:
    """Tags in document order and the text outside tags (for structure checks)."""

    def __init__(self, page: str):
        from html.parser import HTMLParser

        self.tags, self.text = [], []
        outline = self

        class P(HTMLParser):
            def handle_starttag(self, tag, attrs):
                outline.tags.append((tag, dict(attrs)))

            def handle_data(self, data):
                outline.text.append(data)

        P().feed(page)


def _biased_run(root, model, method, seed, gap, n=240, one_class=False):
    """Predictions where women are classified worse by ``gap`` (planted), or one predicted class."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    sex = np.where((np.arange(n) // 3) % 2 == 0, "M", "F")
    age = np.where((np.arange(n) // 6) % 2 == 0, 30, 70)
    correct = rng.random(n) < np.where(sex == "M", 0.8, 0.8 - gap)
    pred = np.where(correct, y, (y + 1) % 3)
    proba = np.full((n, 3), 0.1)
    proba[np.arange(n), 0 if one_class else pred] = 0.8
    p = Predictions(np.array([f"i{i}" for i in range(n)]), np.array(["test"] * n), np.array(CLASSES)[y], proba, CLASSES,
                    {"sex": sex, "age": age.astype(str)})
    folder = root / "toy" / model / method / f"seed-{seed}"
    write_predictions(folder / "predictions.csv", p)
    write_record(folder, {"method": method, "model": model, "seed": seed, "manifest": str(root / "m/manifest.csv")})


def test_report_opens_with_findings_and_renders_degenerate_runs(tmp_path):
    import json as _json

    from embedkit.report import build_report

    runs = tmp_path / "runs"
    (runs / "m").mkdir(parents=True)
    (runs / "m/phantom.json").write_text(_json.dumps({"bias": [{"attribute": "sex", "group": "F", "strength": 0.6}]}))
    for seed in range(2):
        _biased_run(runs, "clip", "linear", seed, gap=0.4)
    _biased_run(runs, "gloria", "linear", 0, gap=0.0)
    _biased_run(runs, "gloria", "zeroshot", 0, gap=0.0, one_class=True)  # one predicted class: point CIs
    build_report(runs, tmp_path / "rep", n_boot=200)
    page = (tmp_path / "rep/report.html").read_text()
    outline = _Outline(page)
    order = [t for t, _ in outline.tags]
    sections = [a.get("id") for t, a in outline.tags if t == "section"]
    assert order[order.index("body") + 1] == "h1" and sections[:3] == ["findings", "figures", "tables"]
    first_table = order.index("table")
    assert order.index("section") < first_table and all(t != "table" for t in order[:order.index("details")])
    text = " ".join(outline.text)
    assert "# embedkit" not in text and "| ---" not in text and "![" not in text  # no raw Markdown
    assert "sex: 4 gap(s) beyond the noise floor in 1 of 3 runs" in text and "the largest: clip / linear: sex" in text
    for attr in ("sex", "age", "sex_age"):       # every declared attribute, the intersection included, in words
        assert f'<p class="lead">{attr}: ' in page, attr
    assert "worst group F (4 of 4), best M (4 of 4)" in text and "age: no gap beyond its noise floor" in text
    assert "Planted bias (sex = F, findings 60% fainter): recovered as a significant F1 gap by 1 of 3" in text
    md = (tmp_path / "rep/report.md").read_text()
    assert md.index("## Findings") < md.index("## Figures") < md.index("## Tables")


def test_cross_validation_rounds_pool_out_of_fold_predictions(tmp_path):
    """Runs of datasets <base>-fold<k>: each image tested once; the report evaluates the pooled set."""
    from embedkit.report import summarise
    from embedkit.predictions import read_predictions

    for k in range(3):  # three rounds, disjoint test images
        fake_run(tmp_path / "runs", "clip", "linear", 0, 1.5)
        src = tmp_path / "runs/toy/clip/linear/seed-0"
        dst = tmp_path / f"runs/toy-fold{k}/clip/linear/seed-0"
        dst.parent.mkdir(parents=True)
        src.rename(dst)
        p = read_predictions(dst / "predictions.csv")
        p.image_id = np.char.add(p.image_id, f"-f{k}")
        write_predictions(dst / "predictions.csv", p)
    (group,) = summarise(tmp_path / "runs", n_boot=50)
    assert group.dataset == "toy (3-fold CV, pooled)" and len(group.runs) == 3
    assert group.summary["folds"]["k"] == 3 and len(group.summary["folds"]["accuracy"]) == 3
    from embedkit.runs import evaluate_predictions

    one = evaluate_predictions(read_predictions(tmp_path / "runs/toy-fold0/clip/linear/seed-0/predictions.csv"), n_boot=50)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(group.summary["accuracy"]["ci"]) < width(one["ci"]["accuracy"])  # 360 pooled images vs 120


def test_interventions_are_compared_with_erm_on_the_same_images(tmp_path):
    """A planted gap that an 'intervention' removes is reported as shrunk beyond noise; one that changes
    nothing is not; the frontier figure is drawn."""
    from embedkit.report import build_report

    for seed in range(2):
        _biased_run(tmp_path / "runs", "clip", "linear", seed, 0.45)
        _biased_run(tmp_path / "runs", "clip", "linear+reweight-sex", seed + 10, 0.0)
        _biased_run(tmp_path / "runs", "clip", "linear+offsets-sex", seed, 0.45)
    md = build_report(tmp_path / "runs", tmp_path / "rep", n_boot=200).read_text()
    assert (tmp_path / "rep/figures/frontier.png").is_file()
    rows = {line.split("|")[3].strip(): line for line in md.splitlines() if line.startswith("| clip | linear |")}
    assert "shrinks f1_gap" in rows["reweight"] and "no gap shrank beyond noise" in rows["offsets"]
    assert "1 of 2 intervention runs shrank a gap beyond noise" in md
    assert "adjusted over the table's 6 gap changes (Benjamini–Hochberg false-discovery-rate q)" in md
    assert "| Δ accuracy | Δ \\|f1_gap\\| | Δ \\|eqodds\\| |" in md       # a '|' in a cell does not split its row


def test_a_cross_validated_report_says_it_is_pooled_and_states_the_planted_bias(tmp_path):
    import json as _json

    from embedkit.report import build_report
    from embedkit.predictions import read_predictions
    from embedkit.runs import read_record, write_record

    runs = tmp_path / "runs"
    (runs / "m/folds").mkdir(parents=True)
    (runs / "m/phantom.json").write_text(_json.dumps({"bias": [{"attribute": "sex", "group": "F", "strength": 0.6}]}))
    for k in range(3):
        _biased_run(runs, "clip", "linear", 0, gap=0.4)
        src, dst = runs / "toy/clip/linear/seed-0", runs / f"toy-fold{k}/clip/linear/seed-0"
        dst.parent.mkdir(parents=True)
        src.rename(dst)
        p = read_predictions(dst / "predictions.csv")
        p.image_id = np.char.add(p.image_id, f"-f{k}")
        write_predictions(dst / "predictions.csv", p)
        write_record(dst, read_record(dst) | {"manifest": str(runs / f"m/folds/fold-{k}.csv")})
    md = build_report(runs, tmp_path / "rep", n_boot=100).read_text()
    assert "test split, pooled out-of-fold over 3 folds." in md.splitlines()[2]
    assert "Planted bias (sex = F, findings 60% fainter): recovered as a significant F1 gap by 1 of 1" in md
    rows = [line.split(" | ") for line in md.splitlines() if line.startswith("| clip |")]
    accuracy, per_fold = rows[0], rows[-1]          # the accuracy table's row; the per-fold table's
    sd = np.std([float(v) for v in per_fold[3].split(", ")], ddof=1)
    assert f"(folds sd {sd:.3f})" in accuracy[1]    # the spread from refitting, beside the pooled figure
