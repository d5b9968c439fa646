"""Heads and zero-shot from a cache: learning, validation-only selection, determinism, skipping."""

import json

import numpy as np
import pytest

from embedkit.cli.app import main
from embedkit.heads.runner import ExperimentConfig, run_experiment
from embedkit.heads.trained import HeadConfig
from embedkit.predictions import read_predictions

from .conftest import make_cache, separable, text_set

FAST = HeadConfig(epochs=20, lrs=(1e-3, 1e-2), weight_decays=(1e-4,))


def cfg(cache, tmp_path, method, **kw):
    return ExperimentConfig(model="synthetic", manifest=cache.with_suffix(".csv"), method=method, cache=cache,
                            runs_dir=tmp_path / "runs", dataset="toy", head=kw.pop("head", FAST), n_boot=50, **kw)


@pytest.mark.parametrize("method", ["linear", "mlp", "knn"])
def test_heads_learn_a_separable_problem(synthetic_cache, tmp_path, method):
    (res,) = run_experiment(cfg(synthetic_cache, tmp_path, method))
    assert res.record["metrics"]["accuracy"] > 0.95
    preds = read_predictions(res.path / "predictions.csv")
    assert set(preds.split) == {"val", "test"} and len(preds.image_id) == 90
    assert res.path == tmp_path / "runs/toy/synthetic" / method / "seed-0"


def test_deterministic_and_skip_existing(synthetic_cache, tmp_path):
    first = run_experiment(cfg(synthetic_cache, tmp_path, "mlp", seeds=(0, 1)))
    text = (first[1].path / "predictions.csv").read_text()
    again = run_experiment(cfg(synthetic_cache, tmp_path, "mlp", seeds=(0, 1)))
    assert all(r.skipped for r in again)
    forced = run_experiment(cfg(synthetic_cache, tmp_path, "mlp", seeds=(1,), force=True))
    assert not forced[0].skipped and (forced[0].path / "predictions.csv").read_text() == text
    other = run_experiment(cfg(synthetic_cache, tmp_path, "mlp", seeds=(1,), head=HeadConfig(epochs=21, lrs=(1e-3,))))
    assert not other[0].skipped  # a changed configuration reruns


def _with_test_labels_shuffled(tmp_path, name, text=None):
    x, y, split = separable(noise=2.5)
    y2 = y.copy()
    test = np.flatnonzero(split == "test")
    y2[test] = np.random.default_rng(5).permutation(y2[test])
    return (make_cache(tmp_path / f"{name}-a.h5", x, y, split, text=text),
            make_cache(tmp_path / f"{name}-b.h5", x, y2, split, text=text))


@pytest.mark.parametrize("method", ["linear", "knn", "zeroshot"])
def test_test_labels_never_reach_selection(tmp_path, method):
    rng = np.random.default_rng(0)
    text = {f: text_set({c: rng.normal(size=(6, 16)) for c in range(3)}) for f in ("clip", "gloria", "cxrclip")}
    a, b = _with_test_labels_shuffled(tmp_path, method, text)
    ra = run_experiment(cfg(a, tmp_path / "a", method, seeds=(0,)))[0].record
    rb = run_experiment(cfg(b, tmp_path / "b", method, seeds=(0,)))[0].record
    assert ra["selection"] == rb["selection"]
    assert ra["metrics"]["accuracy"] != rb["metrics"]["accuracy"] or method == "zeroshot"


def test_zeroshot_picks_format_on_validation_and_records_scores(tmp_path):
    x, y, split = separable(d=8, noise=0.05)
    good = text_set({c: np.repeat(x[y == c][:1], 3, 0) for c in range(3)})
    bad = text_set({c: np.random.default_rng(c).normal(size=(3, 8)) for c in range(3)})
    cache = make_cache(tmp_path / "zs.h5", x, y, split, text={"clip": bad, "gloria": good, "cxrclip": bad})
    runs = run_experiment(cfg(cache, tmp_path, "zeroshot", seeds=(0, 1, 2)))
    sel = runs[0].record["selection"]
    assert sel["prompt_format"] == "gloria" and sel["val_scores"]["gloria"]["repeats"] == 10
    assert set(sel["val_scores"]) == {"clip", "gloria", "cxrclip"}
    assert [r.record["selection"]["prompt_sample_seed"] for r in runs] == [0, 1, 2]
    assert runs[0].record["metrics"]["accuracy"] > 0.9


def test_cxrclip_runs_differ_by_seed_and_record_their_prompts(tmp_path):
    x, y, split = separable(d=8, noise=0.6)
    rng = np.random.default_rng(3)
    text = text_set({c: np.concatenate([np.repeat(x[y == c][:1], 12, 0), rng.normal(size=(12, 8))]) for c in range(3)})
    cache = make_cache(tmp_path / "cx.h5", x, y, split, text={"cxrclip": text})
    runs = run_experiment(cfg(cache, tmp_path, "zeroshot", seeds=(0, 1, 2), prompts=("cxrclip",)))
    probs = [read_predictions(r.path / "predictions.csv").proba for r in runs]
    assert not np.allclose(probs[0], probs[1]) and not np.allclose(probs[1], probs[2])
    sel = runs[1].record["selection"]
    assert sel["prompt_sample_seed"] == 1 and sel["n_prompts"] == 10 and sel["prompts_used"]["pool_sizes"] == [24] * 3


def test_missing_prompt_set_says_how_to_add_it(synthetic_cache, tmp_path):
    from embedkit.errors import EmbedkitError

    with pytest.raises(EmbedkitError, match="--text-only"):
        run_experiment(cfg(synthetic_cache, tmp_path, "zeroshot"))


def test_cli_probe_and_zeroshot_from_an_extracted_cache(phantom_dir, tmp_path, capsys):
    manifest = str(phantom_dir / "manifest.csv")
    common = ["--manifest", manifest, "--cache-dir", str(tmp_path / "c"), "--runs-dir", str(tmp_path / "r")]
    assert main(["extract", "--model", "clip-tiny", "--quiet", "--manifest", manifest, "--cache-dir", str(tmp_path / "c")]) == 0
    assert main(["probe", "--model", "clip-tiny", "--head", "knn", *common]) == 0
    assert main(["probe", "--model", "clip-tiny", "--head", "linear", "--epochs", "5", "--seeds", "0,1", *common]) == 0
    assert main(["zeroshot", "--model", "clip-tiny", "--seeds", "0", *common]) == 0
    out = capsys.readouterr().out
    assert "prompt_format=" in out and "k=" in out
    runs = tmp_path / "r/phantom0/clip-tiny"
    assert sorted(p.parent.name + "/" + p.name for p in runs.glob("*/seed-*")) == [
        "knn/seed-0", "linear/seed-0", "linear/seed-1", "zeroshot/seed-0"]
    record = json.loads((tmp_path / "r/phantom0/clip-tiny/linear/seed-1/run.json").read_text())
    assert record["metrics"]["n"] == len(read_predictions(tmp_path / "r/phantom0/clip-tiny/linear/seed-1/predictions.csv").select("test").image_id)
    assert main(["probe", "--model", "medclip-vit-tiny", "--head", "knn", *common]) == 2
    assert "no cache of medclip-vit-tiny" in capsys.readouterr().err
    assert main(["probe", "--model", "clip-tiny", "--head", "mlp", "--solver", "lbfgs", *common]) == 2
    assert "--solver lbfgs fits the linear probe, not mlp" in capsys.readouterr().err
    lbfgs = ["--runs-dir", str(tmp_path / "r-lbfgs"), "--manifest", manifest, "--cache-dir", str(tmp_path / "c")]
    assert main(["probe", "--model", "clip-tiny", "--head", "linear", "--solver", "lbfgs", "--seeds", "0", *lbfgs]) == 0
    fitted = json.loads((tmp_path / "r-lbfgs/phantom0/clip-tiny/linear/seed-0/run.json").read_text())
    assert fitted["config"]["head"]["solver"] == "lbfgs" and len(fitted["selection"]["sweep"]) == 8
    sel = fitted["selection"]                                  # shown in its own terms, not as "lr=0.0"
    assert f"l2={sel['weight_decay']} (L-BFGS, {sel['best_epoch']} iterations)" in " ".join(capsys.readouterr().out.split())
    assert "solver" not in record["config"]["head"]           # the paper's AdamW: identities as before


def test_a_new_declaration_rescores_finished_runs_without_refitting(synthetic_cache, tmp_path):
    """Same names, other cut points: the run is skipped, its metrics follow the new bands."""
    first = run_experiment(cfg(synthetic_cache, tmp_path, "knn", attributes="sex,age"))[0]
    assert set(first.record["metrics"]["groups"]["age"]) == {"young", "old"}
    predictions = (first.path / "predictions.csv").read_bytes()
    again = run_experiment(cfg(synthetic_cache, tmp_path, "knn", attributes="sex,age:30,50"))[0]
    assert again.skipped and (again.path / "predictions.csv").read_bytes() == predictions
    assert set(again.record["metrics"]["groups"]["age"]) == {"30-50", ">=50"}
    assert json.loads((again.path / "run.json").read_text())["metrics"]["settings"]["attributes"]["age"]["cuts"] == [[30.0, 50.0]]
    same = run_experiment(cfg(synthetic_cache, tmp_path, "knn", attributes="sex,age:30,50"))[0]
    assert same.record == again.record


@pytest.mark.parametrize("method", ["linear", "knn"])
def test_an_attribute_the_manifest_lacks_is_named_before_anything_is_fitted(synthetic_cache, tmp_path, method):
    from embedkit.errors import EmbedkitError

    manifest = synthetic_cache.with_suffix(".csv")
    with pytest.raises(EmbedkitError, match=rf"^{manifest}: no column 'race' for --attributes; columns there: age, sex$"):
        run_experiment(cfg(synthetic_cache, tmp_path, method, attributes="sex,race*age"))
    assert not (tmp_path / "runs").exists()         # no half-made run folder to trip over later


def test_a_store_of_another_model_is_refused(synthetic_cache, tmp_path):
    """--cache-file names a store by hand: filing its results under another model's name would mislabel them."""
    from dataclasses import replace

    from embedkit.errors import EmbedkitError

    with pytest.raises(EmbedkitError, match=r"holds synthetic's embeddings, not gloria's; give --model synthetic"):
        run_experiment(replace(cfg(synthetic_cache, tmp_path, "knn"), model="gloria"))
    assert not (tmp_path / "runs").exists()
