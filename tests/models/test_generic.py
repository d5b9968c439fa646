"""Bring your own encoder: the generic adapters load tiny random models saved in each published format,
extract what an independent reference forward on the same files gives, and probe and fine-tune."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from embedkit.cache import read_cache
from embedkit.cli.app import main
from embedkit.manifest import read_manifest
from embedkit.models import get, load_encoder


def _extracted(tmp_path, manifest, args):
    """Extract with ``args``; the store's embeddings of the manifest's first 8 rows, and those rows' images."""
    from embedkit.cache.join import join

    assert main(["extract", *args, "--manifest", str(manifest), "--cache-dir", str(tmp_path / "c"), "--quiet"]) == 0
    store = join(read_cache(next((tmp_path / "c").glob("*.h5"))), read_manifest(manifest))
    m = read_manifest(manifest)
    images = [Image.open(m.image_path(r)) for r in m.rows[:8]]
    return np.asarray(store.embeddings[:8]), images, store


def _close(ours, reference):
    reference = reference.detach().numpy()
    cos = (ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    assert cos.min() > 0.99999


def test_open_clip_folder_matches_open_clips_own_loading(phantom_dir, tmp_path, caplog):
    """The file's weights are what extraction uses (the reference below), so open_clip's "Model initialized
    randomly" from building the architecture first is silenced."""
    import logging

    import open_clip

    folder = get("open_clip").save(load_encoder("open_clip-tiny", seed=3), tmp_path / "w")
    with caplog.at_level(logging.WARNING):
        ours, images, store = _extracted(tmp_path, phantom_dir / "manifest.csv",
                                         ["--model", "open_clip", "--weights", str(folder), "--name", "my-clip"])
    assert not [r for r in caplog.records if "initialized randomly" in r.getMessage()]
    assert store.attrs["model"] == "my-clip" and "clip" in store.text
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")  # open_clip loads the weights
    with torch.no_grad():
        reference = model.eval().encode_image(torch.stack([preprocess(i) for i in images]), normalize=True)
    _close(ours, reference)


def test_open_clip_state_dict_with_arch_json(phantom_dir, tmp_path):
    import open_clip
    from safetensors.torch import save_file

    enc = load_encoder("open_clip-tiny", seed=4)
    cfg = enc.description["config"]
    (tmp_path / "tiny-vit.json").write_text(json.dumps(cfg["model_cfg"]))
    save_file({k: v.contiguous() for k, v in enc.model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    ours, images, _ = _extracted(tmp_path, phantom_dir / "manifest.csv",
                                 ["--model", "open_clip", "--weights", str(tmp_path / "w.safetensors"),
                                  "--arch", str(tmp_path / "tiny-vit.json")])
    model = open_clip.create_model("tiny-vit", pretrained=str(tmp_path / "w.safetensors"))
    pre = open_clip.image_transform(model.visual.image_size, is_train=False)
    with torch.no_grad():
        _close(ours, model.eval().encode_image(torch.stack([pre(i) for i in images]), normalize=True))


def test_an_openai_layout_checkpoint_of_another_size_is_read_from_its_shapes(phantom_dir, tmp_path):
    """CheXzero ships an OpenAI CLIP (ViT-B/32) state dict: the architecture is read from the tensors."""
    from open_clip.model import CLIP, build_model_from_openai_state_dict
    from open_clip.transform import image_transform

    torch.manual_seed(0)
    tiny = CLIP(embed_dim=32, vision_cfg={"image_size": 32, "patch_size": 16, "width": 64, "layers": 2, "head_width": 64},
                text_cfg={"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}, quick_gelu=True)
    torch.save(tiny.state_dict(), tmp_path / "best_64_5e-05.pt")
    ours, images, store = _extracted(tmp_path, phantom_dir / "manifest.csv",
                                     ["--model", "open_clip", "--weights", str(tmp_path / "best_64_5e-05.pt")])
    assert store.attrs["model"] == "best_64_5e-05"                  # named after the weights by default
    reference = build_model_from_openai_state_dict(torch.load(tmp_path / "best_64_5e-05.pt"), cast_dtype=torch.float32)
    pre = image_transform(32, is_train=False)
    with torch.no_grad():
        _close(ours, reference.float().eval().encode_image(torch.stack([pre(i) for i in images]), normalize=True))


def test_hf_clip_folder_extracts_zero_shots_probes_and_fine_tunes(phantom_dir, tmp_path):
    from transformers import CLIPImageProcessor, CLIPModel

    folder = get("hf-clip").save(load_encoder("hf-clip-tiny", seed=5), tmp_path / "hf")
    manifest = phantom_dir / "manifest.csv"
    ours, images, store = _extracted(tmp_path, manifest, ["--model", "hf-clip", "--weights", str(folder), "--name", "mine"])
    model, proc = CLIPModel.from_pretrained(str(folder)).eval(), CLIPImageProcessor.from_pretrained(str(folder))
    with torch.no_grad():
        _close(ours, torch.nn.functional.normalize(
            model.get_image_features(pixel_values=proc(images=[i.convert("RGB") for i in images], return_tensors="pt")["pixel_values"]), dim=-1))
    common = ["--manifest", str(manifest), "--cache-dir", str(tmp_path / "c"), "--runs-dir", str(tmp_path / "r")]
    assert main(["zeroshot", "--model", "mine", "--seeds", "0", *common]) == 0
    assert main(["probe", "--model", "mine", "--head", "linear", "--epochs", "3", *common]) == 0
    assert main(["finetune", "--model", "hf-clip", "--weights", str(folder), "--name", "mine", "--lora", "--epochs", "1",
                 "--lrs", "1e-3", "--batch-size", "32", "--quiet", "--manifest", str(manifest),
                 "--runs-dir", str(tmp_path / "r")]) == 0
    record = json.loads(next((tmp_path / "r").glob("*/mine/lora/seed-0/run.json")).read_text())
    assert {"q_proj", "v_proj", "fc1", "patch_embedding"} <= set(record["targets"]["modules"]) and record["lora_layers"]


def test_hf_vision_backbone_is_vision_only(phantom_dir, tmp_path, capsys):
    from transformers import BitImageProcessor, Dinov2Model

    folder = get("hf-vision").save(load_encoder("hf-vision-tiny", seed=6), tmp_path / "rad-dino")
    manifest = phantom_dir / "manifest.csv"
    ours, images, store = _extracted(tmp_path, manifest, ["--model", "hf-vision", "--weights", str(folder)])
    assert store.attrs["model"] == "rad-dino" and not store.text
    model, proc = Dinov2Model.from_pretrained(str(folder)).eval(), BitImageProcessor.from_pretrained(str(folder))
    with torch.no_grad():
        _close(ours, model(pixel_values=proc(images=[i.convert("RGB") for i in images], return_tensors="pt")["pixel_values"]).pooler_output)
    common = ["--manifest", str(manifest), "--cache-dir", str(tmp_path / "c"), "--runs-dir", str(tmp_path / "r")]
    assert main(["probe", "--model", "rad-dino", "--head", "knn", *common]) == 0
    capsys.readouterr()
    assert main(["zeroshot", "--model", "rad-dino", *common]) == 2 and "vision-only" in capsys.readouterr().err
    assert main(["finetune", "--model", "hf-vision", "--weights", str(folder), "--full", "--epochs", "1", "--lrs", "1e-4",
                 "--batch-size", "32", "--quiet", "--manifest", str(manifest), "--runs-dir", str(tmp_path / "r")]) == 0


def test_bad_inputs_are_named(phantom_dir, tmp_path, capsys):
    manifest = ["--manifest", str(phantom_dir / "manifest.csv"), "--cache-dir", str(tmp_path / "c")]
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / "w" / "model.safetensors").write_bytes(b"")
    assert main(["extract", "--model", "hf-clip", "--weights", str(tmp_path / "w"), *manifest]) == 2
    assert "model_type 'bert'" in capsys.readouterr().err
    assert main(["extract", "--model", "open_clip", *manifest]) == 2
    assert "give its checkpoint with --weights" in capsys.readouterr().err
    assert main(["extract", "--model", "clip-tiny,open_clip-tiny", "--name", "x", *manifest]) == 2
    assert "--name/--arch go with exactly one" in capsys.readouterr().err
    assert main(["probe", "--model", "clp", *manifest]) == 2
    assert "did you mean clip" in capsys.readouterr().err


def test_models_lists_the_generic_adapters(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in ("open_clip", "hf-clip", "hf-vision")) and "open_clip_config.json" in out


def test_an_openai_torchscript_archive_of_another_size(tmp_path):
    """OpenAI's original files are TorchScript archives (fp16, with input_resolution and friends)."""
    from open_clip.model import CLIP

    from embedkit.models.registry import define

    from .test_checkpoints import _torchscript_archive

    torch.manual_seed(1)
    tiny = CLIP(embed_dim=32, vision_cfg={"image_size": 32, "patch_size": 16, "width": 64, "layers": 2, "head_width": 64},
                text_cfg={"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}, quick_gelu=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in tiny.state_dict().items()}
    state.update(input_resolution=torch.tensor(32), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    _torchscript_archive(state, tmp_path / "ViT-tiny.pt")
    torch.save(tiny.state_dict(), tmp_path / "plain.pt")
    define("open_clip", "ts-clip")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a = load_encoder("ts-clip", weights=tmp_path / "ViT-tiny.pt").encode_images(x)
        b = load_encoder("ts-clip", weights=tmp_path / "plain.pt").encode_images(x)
    torch.testing.assert_close(a, b, atol=2e-2, rtol=0)   # fp16 weights


def test_hf_clip_folder_without_tokenizer_extracts_images_and_zero_shot_says_why(phantom_dir, tmp_path, capsys, monkeypatch):
    """A tokenizer transformers cannot load (no files, or a missing protobuf) is no internal error: the image
    embeddings are extracted and zero-shot names what it needs."""
    import transformers

    folder = get("hf-clip").save(load_encoder("hf-clip-tiny", seed=5), tmp_path / "hf")
    for f in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / f).unlink(missing_ok=True)

    def no_protobuf(*a, **k):
        raise ImportError("requires the protobuf library")
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_protobuf)
    manifest = str(phantom_dir / "manifest.csv")
    common = ["--manifest", manifest, "--cache-dir", str(tmp_path / "c")]
    with pytest.warns(UserWarning, match="no usable tokenizer"):
        assert main(["extract", "--model", "hf-clip", "--weights", str(folder), "--name", "mine", *common]) == 0
    assert main(["zeroshot", "--model", "mine", "--seeds", "0", "--runs-dir", str(tmp_path / "r"), *common]) == 2
    assert "no prompt embeddings" in capsys.readouterr().err
