"""LoRA and full fine-tuning on tiny models and the phantom."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from embedkit.finetune.data import load_images
from embedkit.finetune.head import Head, embed_split, fit_probe_init
from embedkit.finetune.lora import apply_lora, load_adapters
from embedkit.finetune.distributed import Distributed
from embedkit.finetune.train import FinetuneConfig, finetune, fit
from embedkit.manifest import read_manifest
from embedkit.models import load_encoder
from embedkit.predictions import read_predictions


def data_for(manifest_path, model):
    m = read_manifest(manifest_path)
    enc = load_encoder(model)
    return m, load_images(m, enc.preprocess, splits=("train", "val", "test"), labels=m.labels(), skip_bad=False,
                          memory_limit_gb=1, workers=0)


def probe_init(enc, data, seed=0):
    features = {s: embed_split(enc.image_tower, data[s], torch.device("cpu")) for s in ("train", "val")}
    return fit_probe_init(features, data, seed, 6)


ENDS = {  # the first and last layers of each tower: patch embedding or stem, and the final projection
    "clip-tiny": ("model.conv1", "model"),  # visual.proj is a raw parameter: its adapter sits on `model`
    "medclip-rn50-tiny": ("model.model.conv1", "model.model.fc"),
    "medclip-vit-tiny": ("model.model.embeddings.patch_embeddings.projection", "model.projection_head"),
    "biomedclip-tiny": ("model.trunk.patch_embed.proj", "model.head.proj"),
    "gloria-tiny": ("model.model.conv1", "model.global_embedder"),
    "vit-imagenet-tiny": ("model.patch_embed.proj", None),  # its last layer is the norm; the head is dropped
}


@pytest.mark.parametrize("model, modules, params", [("clip-tiny", 9, 1), ("medclip-rn50-tiny", 18, 0),
                                                    ("medclip-vit-tiny", 32, 0), ("biomedclip-tiny", 50, 0),
                                                    ("gloria-tiny", 18, 0), ("vit-imagenet-tiny", 9, 0)])
def test_lora_reaches_every_layer_including_the_ends(model, modules, params):
    enc = load_encoder(model)
    counts = apply_lora(enc.image_tower, enc.lora_targets, rank=2, alpha=4, dropout=0.1)
    assert counts.get("default", 0) == modules and counts.get("params", 0) == params
    trainable = [n for n, p in enc.image_tower.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    names = {n.replace(".base_layer", "") for n in trainable}
    for end in filter(None, ENDS[model]):
        assert any(n.startswith(end + ".lora_A") for n in names), (end, sorted(names)[:6])


def test_parameter_targets_get_a_second_adapter_and_both_train():
    from embedkit.finetune.lora import parse_targets

    enc = load_encoder("clip-tiny")
    targets = parse_targets("c_fc,param:in_proj_weight", enc.lora_targets)
    assert apply_lora(enc.image_tower, targets, rank=2, alpha=4, dropout=0.1) == {"default": 2, "params": 2}
    for n, p in enc.image_tower.named_parameters():
        if "lora_B" in n:
            p.data.normal_()
    enc.image_tower(torch.randn(2, 3, 32, 32)).sum().backward()
    grads = {n: p.grad is not None and p.grad.abs().sum() > 0 for n, p in enc.image_tower.named_parameters() if "lora_A" in n}
    assert len(grads) == 4 and all(grads.values())


def test_lora_changes_only_adapters_and_head_full_changes_encoder(phantom_dir, tmp_path):
    m, data = data_for(phantom_dir / "manifest.csv", "clip-tiny")
    enc = load_encoder("clip-tiny")
    frozen = {k: v.clone() for k, v in enc.image_tower.state_dict().items()}
    cfg = FinetuneConfig(model="clip-tiny", manifest=phantom_dir / "manifest.csv", mode="lora", epochs=2, batch_size=32, rank=2)
    init = probe_init(enc, data)
    _, model, info = fit(cfg, enc, 0, 1e-2, 0.01, data, init, tmp_path / "ck", Distributed(), torch.device("cpu"))
    after = model.tower.state_dict()
    base = {k.replace(".base_layer", ""): v for k, v in after.items() if "lora_" not in k}
    changed_frozen = [k for k, v in frozen.items() if not torch.equal(v, base.get(k.replace("model.", "model.", 1), v))]
    assert not changed_frozen
    last = torch.load(tmp_path / "ck/last.pt", weights_only=True)["state"]  # the selected epoch may be 0
    lora_b = [v for k, v in last.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # every adapter moved from its zero init
    assert info["trainable_parameters"] < 0.2 * info["total_parameters"]
    full = FinetuneConfig(model="clip-tiny", manifest=phantom_dir / "manifest.csv", mode="full", epochs=1, batch_size=32)
    _, fmodel, _ = fit(full, enc, 0, 1e-3, 0.01, data, init, tmp_path / "ck2", Distributed(), torch.device("cpu"))
    full_last = torch.load(tmp_path / "ck2/last.pt", weights_only=True)["state"]
    assert not torch.equal(full_last["tower.model.conv1.weight"], frozen["model.conv1.weight"])
    # each fit trains a copy: the loaded encoder is left exactly as loaded, ready for the next lr
    assert enc.image_tower.state_dict().keys() == frozen.keys()
    assert all(torch.equal(v, frozen[k]) for k, v in enc.image_tower.state_dict().items())


def test_loss_decreases_on_a_learnable_task(phantom_dir, tmp_path):
    m, data = data_for(phantom_dir / "manifest.csv", "medclip-rn50-tiny")
    enc = load_encoder("medclip-rn50-tiny")
    cfg = FinetuneConfig(model="medclip-rn50-tiny", manifest=phantom_dir / "manifest.csv", mode="full", epochs=8, batch_size=32)
    best, _, _ = fit(cfg, enc, 0, 3e-3, 0.01, data, probe_init(enc, data), tmp_path / "ck", Distributed(), torch.device("cpu"))
    losses = [h["train_loss"] for h in best.history]
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_frozen_encoder_reaches_the_linear_probe(phantom_dir, tmp_path, mode):
    """Encoder learning rate 0: fine-tuning's validation loss is the linear probe's (within 5 %)."""
    m, data = data_for(phantom_dir / "manifest.csv", "clip-tiny")
    enc = load_encoder("clip-tiny")
    init = probe_init(enc, data)
    cfg = FinetuneConfig(model="clip-tiny", manifest=phantom_dir / "manifest.csv", mode=mode, epochs=2, batch_size=32, rank=2)
    best, _, _ = fit(cfg, enc, 0, 0.0, 0.0, data, init, tmp_path / "ck", Distributed(), torch.device("cpu"))
    assert best.best_val_loss <= 1.05 * init.record["val_loss"]
    assert best.best_val_loss == pytest.approx(init.record["val_loss"], rel=1e-4)


def test_selection_is_never_worse_than_the_start(phantom_dir, tmp_path):
    """A learning rate that wrecks the encoder: the selected state is the start (epoch 0), not a wreck."""
    m, data = data_for(phantom_dir / "manifest.csv", "clip-tiny")
    enc = load_encoder("clip-tiny")
    init = probe_init(enc, data)
    cfg = FinetuneConfig(model="clip-tiny", manifest=phantom_dir / "manifest.csv", mode="full", epochs=3, batch_size=32)
    best, model, _ = fit(cfg, enc, 0, 1.0, 0.0, data, init, tmp_path / "ck", Distributed(), torch.device("cpu"))
    start = init.record["val_loss"]
    assert best.best_val_loss <= start * (1 + 1e-5)
    assert all(h["val_loss"] > start for h in best.history) and best.best_epoch == 0


def test_head_on_normalised_embeddings_learns_and_is_calibrated(phantom_dir, tmp_path):
    """The collapse of issue 13: full fine-tuning of a normalised tower kept >= 4 predicted classes and
    a mean top-class confidence within 0.15 of the accuracy on test."""
    (rec,) = finetune(FinetuneConfig(model="biomedclip-tiny", manifest=phantom_dir / "manifest.csv", mode="full",
                                     runs_dir=tmp_path, epochs=3, batch_size=32, lrs=(1e-3,), n_boot=20))
    p = read_predictions(tmp_path / "phantom0/biomedclip-tiny/full/seed-0/predictions.csv").select("test")
    assert len(set(p.proba.argmax(1))) >= 4
    assert abs(p.proba.max(1).mean() - rec["metrics"]["accuracy"]) <= 0.15
    assert rec["selection"]["val_loss"] <= rec["init"]["val_loss"] * (1 + 1e-5)


KILL = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from embedkit.finetune.train import FinetuneConfig, finetune
    def stop(info):
        if info["epoch"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    cfg = FinetuneConfig(model="clip-tiny", manifest=Path(sys.argv[1]), mode="lora", runs_dir=Path(sys.argv[2]),
                         epochs=4, batch_size=32, lrs=(1e-2,), rank=2, n_boot=50)
    finetune(cfg, on_epoch=stop)
""")


def test_resume_after_interruption_matches_uninterrupted(phantom_dir, tmp_path):
    manifest = phantom_dir / "manifest.csv"
    script = tmp_path / "kill.py"
    script.write_text(KILL)
    killed = subprocess.run([sys.executable, str(script), str(manifest), str(tmp_path / "a")], capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-1500:]
    run_a = tmp_path / "a/phantom0/clip-tiny/lora/seed-0"
    assert not (run_a / "run.json").exists() and (run_a / "checkpoints/lr-0.01-wd-0.01/last.pt").exists()
    cfg = dict(model="clip-tiny", manifest=manifest, mode="lora", epochs=4, batch_size=32, lrs=(1e-2,), rank=2, n_boot=50)
    resumed = finetune(FinetuneConfig(runs_dir=tmp_path / "a", **cfg))[0]
    clean = finetune(FinetuneConfig(runs_dir=tmp_path / "b", **cfg))[0]
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3, 4]
    timing = ("images_per_s", "step_seconds")
    assert [{k: v for k, v in h.items() if k not in timing} for h in resumed["history"]] == \
        [{k: v for k, v in h.items() if k not in timing} for h in clean["history"]]
    pa = read_predictions(run_a / "predictions.csv")
    pb = read_predictions(tmp_path / "b/phantom0/clip-tiny/lora/seed-0/predictions.csv")
    np.testing.assert_array_equal(pa.proba, pb.proba)
    again = finetune(FinetuneConfig(runs_dir=tmp_path / "b", **cfg))[0]
    assert again["skipped"]


def test_run_folder_record_and_saved_adapter(phantom_dir, tmp_path):
    manifest = phantom_dir / "manifest.csv"
    (rec,) = finetune(FinetuneConfig(model="clip-tiny", manifest=manifest, mode="lora", runs_dir=tmp_path, epochs=2,
                                     batch_size=32, lrs=(1e-3, 1e-2), rank=2, n_boot=50))
    folder = tmp_path / "phantom0/clip-tiny/lora/seed-0"
    saved = json.loads((folder / "run.json").read_text())
    assert saved["trainable_parameters"] == rec["trainable_parameters"] > 0
    assert {s["lr"] for s in saved["selection"]["sweep"]} == {1e-3, 1e-2} and saved["selection"]["best_epoch"] >= 0
    assert {"accuracy", "fairness", "ci", "null"} <= set(saved["metrics"])
    preds = read_predictions(folder / "predictions.csv")
    assert set(preds.split) == {"val", "test"}
    # the saved peft adapter + head reproduce the predictions
    enc = load_encoder("clip-tiny")
    load_adapters(enc.image_tower, folder / "adapter")
    from safetensors.torch import load_file

    head = Head(enc.embed_dim, 6)
    head.load_state_dict(load_file(str(folder / "head.safetensors")))
    _, data = data_for(manifest, "clip-tiny")
    enc.image_tower.eval()
    with torch.no_grad():
        p = torch.softmax(head(enc.image_tower(data["test"].tensors)), -1).numpy()
    np.testing.assert_allclose(p, preds.select("test").proba, atol=1e-5)


def test_two_process_gloo_equals_one_process(phantom_dir, tmp_path):
    manifest = phantom_dir / "manifest.csv"
    args = ["finetune", "--model", "clip-tiny", "--manifest", str(manifest), "--full", "--epochs", "2", "--batch-size", "32",
            "--lrs", "1e-5", "--workers", "0"]  # Adam turns rounding-level gradient differences into ±lr steps
    one = subprocess.run([sys.executable, "-m", "embedkit", *args, "--runs-dir", str(tmp_path / "one")], capture_output=True)
    assert one.returncode == 0, one.stderr.decode()[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "embedkit", *args, "--runs-dir", str(tmp_path / "two")], capture_output=True)
    assert two.returncode == 0, two.stderr.decode()[-3000:]
    p1 = read_predictions(tmp_path / "one/phantom0/clip-tiny/full/seed-0/predictions.csv")
    p2 = read_predictions(tmp_path / "two/phantom0/clip-tiny/full/seed-0/predictions.csv")
    np.testing.assert_allclose(p1.proba, p2.proba, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["clip-tiny", "biomedclip-tiny", "medclip-vit-tiny", "medclip-rn50-tiny", "gloria-tiny",
                                   "vit-imagenet-tiny"])
def test_demo_phantom_runs_learn_and_say_how_sure_they_are(tmp_path_factory, model):
    """Issue 13 on the demo's phantom and settings: no LoRA or full run below 4 predicted classes, and
    mean top-class confidence within 0.15 of the test accuracy."""
    from embedkit.data.phantom import Bias, PhantomSpec, make_phantom

    root = tmp_path_factory.getbasetemp() / "demo-phantom"
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        make_phantom(root, PhantomSpec(per_group=25, size=64, seed=0, bias=[Bias.parse("sex=F:0.6")]))
    for mode, lr in (("lora", 3e-3), ("full", 1e-3)):
        cfg = FinetuneConfig(model=model, manifest=manifest, mode=mode, runs_dir=tmp_path_factory.mktemp("r"),
                             epochs=10, lrs=(lr,), n_boot=20)
        (rec,) = finetune(cfg)
        p = read_predictions(cfg.run_dir(0) / "predictions.csv").select("test")
        assert len(set(p.proba.argmax(1))) >= 4, (model, mode)
        assert abs(p.proba.max(1).mean() - rec["metrics"]["accuracy"]) <= 0.15, (model, mode)


def test_fine_tuning_takes_the_heads_selection_strategies(phantom_dir, tmp_path):
    """lora/full choose among their sweep points by the same strategies as the heads; the chosen point's model
    (rebuilt from its checkpoint when the loss would have chosen another) writes the predictions."""
    from embedkit.finetune import modes
    from embedkit.heads.selection import pick

    assert set(modes.names()) == {"lora", "full"}
    manifest = phantom_dir / "manifest.csv"
    kw = dict(model="clip-tiny", manifest=manifest, mode="full", epochs=2, batch_size=32, lrs=(1e-4, 3e-1), n_boot=20)
    (rec,) = finetune(FinetuneConfig(runs_dir=tmp_path / "dto", selection="dto", **kw))
    sel = rec["selection"]
    assert sel["strategy"] == "dto" and sel["attribute"] == "sex" and len(sel["candidates"]) == 2
    chosen = pick("dto", sel["candidates"], [s["val_loss"] for s in sel["sweep"]])
    assert sel["lr"] == sel["sweep"][chosen]["lr"]
    (loss,) = finetune(FinetuneConfig(runs_dir=tmp_path / "loss", **kw))
    assert "strategy" not in loss["selection"] and loss["config_hash"] != rec["config_hash"]
    # the predictions are the chosen point's model at its best epoch, rebuilt from its checkpoint
    from embedkit.finetune.choose import checkpoint_dir
    from embedkit.finetune.train import _loss_on, _reload

    cfg = FinetuneConfig(runs_dir=tmp_path / "dto", selection="dto", **kw)
    m, data = data_for(manifest, "clip-tiny")
    enc = load_encoder("clip-tiny")
    folder = tmp_path / "dto/phantom0/clip-tiny/full/seed-0"
    model = _reload(cfg, enc, 0, probe_init(enc, data), torch.device("cpu"),
                    checkpoint_dir(folder, sel["lr"], sel["weight_decay"]))
    proba = _loss_on(model, data["test"], torch.device("cpu"), cfg)[1].numpy()
    np.testing.assert_allclose(proba, read_predictions(folder / "predictions.csv").select("test").proba, atol=1e-5)


def test_a_registered_fine_tuning_method_runs_from_the_cli_and_a_study(phantom_dir, tmp_path, monkeypatch):
    """A Mode registered at runtime (here: the tower frozen, only the head trains) is a CLI --mode and a study method."""
    from embedkit.cli.app import main
    from embedkit.finetune import modes
    from embedkit.study import load_study, run_study

    def frozen(tower, cfg, enc):
        for p in tower.parameters():
            p.requires_grad_(False)
        return {"trains": "the head only"}, None

    monkeypatch.setitem(modes._MODES, "head-test", modes.Mode("head-test", (1e-3,), frozen, lambda *a: None))
    manifest = phantom_dir / "manifest.csv"
    assert main(["finetune", "--model", "clip-tiny", "--manifest", str(manifest), "--mode", "head-test", "--epochs", "1",
                 "--batch-size", "32", "--runs-dir", str(tmp_path / "cli"), "--quiet"]) == 0
    record = json.loads((tmp_path / "cli/phantom0/clip-tiny/head-test/seed-0/run.json").read_text())
    assert record["method"] == "head-test" and record["trains"] == "the head only"
    assert main(["finetune", "--model", "clip-tiny", "--manifest", str(manifest), "--mode", "nope"]) == 2
    study = tmp_path / "s.toml"
    study.write_text(f'[data]\nkind = "manifest"\npath = "{manifest}"\n[paths]\nruns_dir = "runs"\ncache_dir = "cache"\n'
                     f'report_dir = "report"\n[models]\nclip-tiny = {{ methods = ["head-test"] }}\n[methods]\n'
                     '"head-test" = { epochs = 1, batch_size = 32, n_boot = 20 }\n[report]\nn_boot = 20\n')
    steps = run_study(load_study(study))
    assert not [s.error for s in steps if s.error], [s.error for s in steps if s.error]
    assert (tmp_path / "runs/phantom0/clip-tiny/head-test/seed-0/run.json").is_file()
