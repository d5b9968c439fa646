"""vit-imagenet: timm's published folder, read back equal to timm's own loader and transform."""

import json

import pytest
import torch

from embedkit.errors import EmbedkitError
from embedkit.models import get, load_encoder

from .conftest import batch


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vit")
    enc = load_encoder("vit-imagenet-tiny", seed=3)
    get("vit-imagenet").save(enc, folder)
    return enc, folder


def test_folder_matches_timm_built_independently(saved, images):
    import timm
    from safetensors.torch import load_file
    from timm.data import create_transform, resolve_data_config

    enc, folder = saved
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "vit_base_patch16_224" and (folder / "model.safetensors").is_file()
    ref = timm.create_model(config["architecture"], pretrained=False, num_classes=config["num_classes"],
                            **config["model_args"]).eval()
    ref.load_state_dict(load_file(str(folder / "model.safetensors")))
    transform = create_transform(**resolve_data_config({}, pretrained_cfg=config["pretrained_cfg"], model=ref))
    loaded = load_encoder("vit-imagenet-tiny", weights=folder)
    rgb = [i.convert("RGB").resize((64, 64)) for i in images]
    x = batch(loaded, rgb)
    torch.testing.assert_close(x, torch.stack([transform(i) for i in rgb]))
    with torch.no_grad():
        expected = ref.forward_head(ref.forward_features(x), pre_logits=True)
        torch.testing.assert_close(loaded.encode_images(x), expected)
        torch.testing.assert_close(enc.encode_images(x), expected)
    assert loaded.embed_dim == 64 and not loaded.normalized and loaded.vision_only


def test_bare_state_dict_and_bad_folders(saved, tmp_path):
    from safetensors.torch import load_file, save_file

    _, folder = saved
    save_file(load_file(str(folder / "model.safetensors")), str(tmp_path / "w.safetensors"))
    assert load_encoder("vit-imagenet-tiny", weights=tmp_path / "w.safetensors").embed_dim == 64
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmbedkitError, match="no config.json"):
        load_encoder("vit-imagenet", weights=tmp_path / "empty")
    with pytest.raises(EmbedkitError, match="vit_base_patch16_224.augreg2_in21k_ft_in1k"):
        load_encoder("vit-imagenet")  # offline: says what to download


def test_no_text_tower_no_prompts_and_lora_reaches_the_patch_embedding():
    from embedkit.cache.extract import text_sets
    from embedkit.finetune.lora import apply_lora

    enc = load_encoder("vit-imagenet-tiny")
    assert text_sets(enc, ("Edema",)) == {}
    apply_lora(enc.image_tower, enc.lora_targets, rank=2, alpha=4, dropout=0.0)
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in enc.image_tower.named_parameters() if ".lora_A." in n}
    assert "model.patch_embed.proj" in adapted
    assert {"model.blocks.0.attn.qkv", "model.blocks.0.attn.proj", "model.blocks.1.mlp.fc1", "model.blocks.1.mlp.fc2"} <= adapted


def test_extract_probe_and_a_clear_zeroshot_refusal(phantom_dir, tmp_path, capsys):
    from embedkit.cli.app import main

    common = ["--manifest", str(phantom_dir / "manifest.csv"), "--cache-dir", str(tmp_path / "c")]
    assert main(["extract", "--model", "vit-imagenet-tiny", "--quiet", *common]) == 0
    runs = ["--runs-dir", str(tmp_path / "r")]
    assert main(["probe", "--model", "vit-imagenet-tiny", "--head", "knn", *common, *runs]) == 0
    capsys.readouterr()
    assert main(["zeroshot", "--model", "vit-imagenet-tiny", *common, *runs]) == 2
    assert "vision-only" in capsys.readouterr().err
