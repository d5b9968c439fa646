"""Each family: published-format round trip, and embeddings equal to an independently built reference."""

import json

import pytest
import torch
from torch import nn

from embedkit.errors import EmbedkitError
from embedkit.models import load_encoder, names
from embedkit.models.checkpoints import load_state_dict

from .conftest import batch

PROMPTS = ["mild pulmonary edema", "there is pneumothorax.", "a photo of a pleural effusion."]


def test_registry_lists_all_five_families_the_imagenet_vit_and_the_generic_adapters():
    assert names()[:9] == ["clip", "biomedclip", "medclip-vit", "medclip-rn50", "gloria", "vit-imagenet",
                           "open_clip", "hf-clip", "hf-vision"]
    with pytest.raises(EmbedkitError, match="unknown model 'clap'"):
        load_encoder("clap")


@pytest.mark.parametrize("name", ["clip", "biomedclip", "medclip-vit", "medclip-rn50", "gloria"])
def test_round_trip_through_published_format(published, images, name):
    enc, weights, tok = published[name]
    loaded = load_encoder(f"{name}-tiny", weights=weights, tokenizer=tok)
    x = batch(enc, images)
    with torch.no_grad():
        a, b = enc.encode_images(x), loaded.encode_images(x)
        ta, tb = enc.encode_texts(PROMPTS), loaded.encode_texts(PROMPTS)
    assert a.shape == (4, enc.embed_dim) and ta.shape == (3, enc.embed_dim)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ta, tb)
    # different images give different embeddings (the preprocessing reaches the model)
    assert torch.cdist(a, a).triu(1).max() > 1e-4
    if enc.normalized:
        torch.testing.assert_close(a.norm(dim=-1), torch.ones(4))
    assert json.loads(loaded.describe())["weights"] != json.loads(enc.describe())["weights"]  # file digest vs state digest


def test_clip_matches_open_clip_built_independently(published, images):
    import open_clip
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    enc, weights, _ = published["clip"]
    ref = CLIP(32, CLIPVisionCfg(image_size=32, patch_size=8, width=64, layers=2, head_width=32),
               CLIPTextCfg(width=32, heads=2, layers=2), quick_gelu=True).eval()
    ref.load_state_dict(torch.load(weights, weights_only=True))
    x = batch(enc, images)
    tokens = open_clip.get_tokenizer("ViT-B-16")(PROMPTS)
    with torch.no_grad():
        torch.testing.assert_close(load_encoder("clip-tiny", weights=weights).encode_images(x), ref.encode_image(x, normalize=True))
        torch.testing.assert_close(enc.encode_texts(PROMPTS), ref.encode_text(tokens, normalize=True))


def test_biomedclip_matches_open_clip_local_dir_loader(published, images, tmp_path):
    import shutil

    import open_clip

    _, folder, _ = published["biomedclip"]
    copy = tmp_path / "bmc"
    shutil.copytree(folder, copy)
    cfg = json.loads((copy / "open_clip_config.json").read_text())
    cfg["model_cfg"]["text_cfg"].update(hf_model_name=str(copy), hf_tokenizer_name=str(copy), hf_model_pretrained=False)
    (copy / "open_clip_config.json").write_text(json.dumps(cfg))
    ref = open_clip.create_model(f"local-dir:{copy}", load_weights=False, pretrained_text=False).eval()
    enc = load_encoder("biomedclip-tiny", weights=folder)
    tokens = open_clip.get_tokenizer(f"local-dir:{copy}")(PROMPTS)
    with torch.no_grad():
        # open_clip's own factory leaves timm at 224 px; compare at the tower level after resizing it
        ref.visual.set_input_size(32)
        ref.load_state_dict({k: v for k, v in torch.load(folder / "open_clip_pytorch_model.bin").items()
                             if not k.endswith("position_ids")})
        x = batch(enc, images)
        torch.testing.assert_close(enc.encode_images(x), ref.encode_image(x, normalize=True))
        torch.testing.assert_close(enc.encode_texts(PROMPTS), ref.encode_text(tokens, normalize=True))


def _clinical_tokenizer(folder):
    from transformers import BertTokenizer

    return BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True)


@pytest.mark.parametrize("variant", ["vit", "rn50"])
def test_medclip_matches_hand_built_reference(published, images, variant):
    from transformers import BertConfig, BertModel, SwinConfig, SwinModel
    from torchvision.models.resnet import Bottleneck, ResNet

    enc, weights, tok = published[f"medclip-{variant}"]
    state = torch.load(weights / "pytorch_model.bin" if weights.is_dir() else weights, weights_only=True)
    sub = lambda prefix: {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}  # noqa: E731
    if variant == "vit":
        vision = SwinModel(SwinConfig(image_size=64, embed_dim=24, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4], window_size=2))
        head = nn.Linear(192, 32, bias=False)
        head.load_state_dict(sub("vision_model.projection_head."))
        vision.load_state_dict(sub("vision_model.model."))
        image_fn = lambda x: head(vision(x.repeat(1, 3, 1, 1)).pooler_output)  # noqa: E731
    else:
        vision = ResNet(Bottleneck, [1, 1, 1, 1], width_per_group=16)
        vision.fc = nn.Linear(2048, 32, bias=False)
        vision.load_state_dict(sub("vision_model.model."))
        image_fn = lambda x: vision(x.repeat(1, 3, 1, 1))  # noqa: E731
    text_state = sub("text_model.model.")
    vocab = text_state["embeddings.word_embeddings.weight"].shape[0]
    text = BertModel(BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64), add_pooling_layer=True)
    text.load_state_dict({k: v for k, v in text_state.items() if not k.endswith("position_ids")})
    proj = nn.Linear(32, 32, bias=False)
    proj.load_state_dict(sub("text_model.projection_head."))
    for m in (vision, text):
        m.eval()
    toks = _clinical_tokenizer(tok)(PROMPTS, padding=True, truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        hs = text(**{k: v for k, v in toks.items() if k != "token_type_ids"}, output_hidden_states=True).hidden_states
        pooled = (hs[1].mean(1) + hs[2].mean(1) + hs[-1].mean(1)) / 3
        x = batch(enc, images)
        torch.testing.assert_close(enc.encode_images(x), nn.functional.normalize(image_fn(x), dim=-1))
        torch.testing.assert_close(enc.encode_texts(PROMPTS), nn.functional.normalize(proj(pooled), dim=-1))


def test_gloria_matches_hand_built_reference(published, images):
    from transformers import BertConfig, BertModel
    from torchvision.models.resnet import Bottleneck, ResNet

    enc, weights, tok = published["gloria"]
    from embedkit.models.checkpoints import load_lightning_checkpoint

    state = {k.removeprefix("gloria."): v for k, v in load_lightning_checkpoint(weights)["state_dict"].items()}
    sub = lambda prefix: {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}  # noqa: E731
    cnn = ResNet(Bottleneck, [1, 1, 1, 1], width_per_group=16)
    cnn.fc = nn.Identity()
    cnn.load_state_dict(sub("img_encoder.model."))
    glob = nn.Linear(2048, 32)
    glob.load_state_dict(sub("img_encoder.global_embedder."))
    cnn.eval()
    x = batch(enc, images)
    with torch.no_grad():
        up = nn.functional.interpolate(x, size=(40, 40), mode="bilinear", align_corners=True)
        torch.testing.assert_close(enc.encode_images(x), glob(cnn(up)))
    # text: one prompt by hand, "mild pulmonary edema" -> words [CLS] mild pulmonary edema [SEP] (all in the tiny vocab)
    text_state = sub("text_encoder.model.")
    bert = BertModel(BertConfig(vocab_size=text_state["embeddings.word_embeddings.weight"].shape[0], hidden_size=32,
                                num_hidden_layers=2, num_attention_heads=2, intermediate_size=64), add_pooling_layer=True)
    bert.load_state_dict({k: v for k, v in text_state.items() if not k.endswith("position_ids")})
    bert.eval()
    toks = _clinical_tokenizer(tok)(["mild pulmonary edema"], padding="max_length", max_length=97, return_tensors="pt")
    assert int(toks["attention_mask"].sum()) == 5  # whole words only: aggregation is the identity here
    with torch.no_grad():
        hs = bert(**toks, output_hidden_states=True).hidden_states
        layers = torch.stack(hs[-4:])[:, 0]                     # (4, 97, 32)
        masked = layers * toks["attention_mask"][0][None, :, None]  # word slots past [SEP] are zero
        expected = masked.mean(1).sum(0)
        torch.testing.assert_close(enc.encode_texts(["Mild pulmonary edema."])[0], expected)


def test_gloria_word_pieces_are_summed():
    from embedkit.models.gloria import aggregate_words, process_text

    hidden = torch.arange(2 * 6 * 3, dtype=torch.float32).reshape(2, 6, 3)
    out = aggregate_words(hidden, ["[CLS]", "pneumo", "##thorax", "seen", "[SEP]", "[PAD]"])
    torch.testing.assert_close(out[:, 1], hidden[:, 1] + hidden[:, 2])
    torch.testing.assert_close(out[:, 2], hidden[:, 3])
    torch.testing.assert_close(out[:, 3], hidden[:, 4])
    assert out[:, 4:].abs().sum() == 0
    assert process_text("1. Small effusion. 2. No pneumo-thorax.\nOK") == "small effusion no pneumo thorax"


def test_wrong_family_and_missing_keys_are_named(published, tmp_path):
    _, clip_weights, _ = published["clip"]
    with pytest.raises(EmbedkitError, match=r"does not match the MedCLIPModel architecture .* missing key\(s\): vision_model"):
        load_encoder("medclip-rn50-tiny", weights=clip_weights)
    state = load_state_dict(clip_weights)
    state.pop("visual.proj")
    state["visual.extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "broken.bin")
    with pytest.raises(EmbedkitError, match=r"1 missing key\(s\): visual.proj; 1 unexpected key\(s\): visual.extra"):
        load_encoder("clip-tiny", weights=tmp_path / "broken.bin")
    (tmp_path / "notweights.bin").write_bytes(b"hello")
    with pytest.raises(EmbedkitError, match="notweights.bin"):
        load_encoder("clip-tiny", weights=tmp_path / "notweights.bin")
    with pytest.raises(EmbedkitError, match="not a BiomedCLIP folder"):
        load_encoder("biomedclip-tiny", weights=tmp_path)


def test_offline_errors_say_what_to_download(published):
    for name, needle in [("clip", "ViT-B-16.pt"), ("biomedclip", "BiomedCLIP-PubMedBERT"),
                         ("medclip-vit", "medclip-vit-pretrained.zip"), ("gloria", "chexpert_resnet50.ckpt")]:
        with pytest.raises(EmbedkitError, match=needle):
            load_encoder(name)
    enc, weights, _ = published["medclip-rn50"]
    no_text = load_encoder("medclip-rn50-tiny", weights=weights)
    with pytest.raises(EmbedkitError, match="--tokenizer DIR"):
        no_text.encode_texts(["edema"])
    with pytest.raises(EmbedkitError, match="Bio_ClinicalBERT"):
        load_encoder("gloria-tiny", weights=published["gloria"][1], tokenizer=weights)  # folder without vocab.txt


def test_safetensors_and_old_position_ids_are_accepted(published, tmp_path, images):
    from safetensors.torch import save_file

    enc, weights, _ = published["clip"]
    save_file({k: v.contiguous() for k, v in torch.load(weights).items()}, str(tmp_path / "open_clip_model.safetensors"))
    loaded = load_encoder("clip-tiny", weights=tmp_path / "open_clip_model.safetensors")
    x = batch(enc, images)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_images(x), enc.encode_images(x))
    # the published MedCLIP file carries the BERT position_ids buffer (transformers 4.24): tolerated
    state = torch.load(published["medclip-rn50"][1], weights_only=True)
    assert "text_model.model.embeddings.position_ids" in state


def test_swin_v5_key_map_is_applied_only_when_installed_names_differ():
    from embedkit.models.medclip import SWIN_V5_RENAMES, MedCLIPModel, _rename_for_installed

    from embedkit.models import bert

    model = MedCLIPModel("vit", True, dict(bert.TINY_BERT, vocab_size=50), 32)
    installed = model.state_dict()
    if any(".attention.q_proj." in k for k in installed):  # transformers >= 5
        rename = _rename_for_installed(model)
        assert rename("vision_model.model.encoder.layers.0.blocks.0.attention.self.query.weight") in installed
    else:
        assert _rename_for_installed(model) is None
        assert any("attention.self.query" in k for k in installed)
    assert len(SWIN_V5_RENAMES) == 7


def test_biomedclip_config_in_the_older_key_spelling_loads(published, images, tmp_path):
    import shutil

    enc, folder, _ = published["biomedclip"]
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    cfg = json.loads((old / "open_clip_config.json").read_text())
    text = cfg["model_cfg"]["text_cfg"]
    text["proj"], text["pooler_type"] = text.pop("hf_proj_type"), text.pop("hf_pooler_type")
    (old / "open_clip_config.json").write_text(json.dumps(cfg))
    loaded = load_encoder("biomedclip-tiny", weights=old)
    x = batch(enc, images)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_images(x), enc.encode_images(x))
        torch.testing.assert_close(loaded.encode_texts(PROMPTS), enc.encode_texts(PROMPTS))


def test_models_command_lists_every_family(capsys):
    from embedkit.cli.app import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("clip", "biomedclip", "medclip-vit", "medclip-rn50", "gloria", "vit-imagenet", "TorchScript",
                 "chexpert_resnet50.ckpt"):
        assert name in out


@pytest.mark.parametrize("name", ["clip", "biomedclip"])
def test_prompts_padded_to_the_longest_equal_the_full_context(published, name):
    """Prompts are embedded padded only to the batch's longest one (issue 17): equal to the authors'
    full-context embedding within cosine 0.99999. (MedCLIP already pads to the longest; GLoRIA keeps its
    97 slots, because its sentence embedding averages over all of them, padding included.)"""
    from embedkit.prompts import all_prompt_texts

    enc, _, _ = published[name]
    texts = all_prompt_texts()[::7][:150]
    with torch.no_grad():
        short = enc.encode_texts(texts)
        if name == "clip":
            import open_clip

            full = enc.model.encode_text(open_clip.get_tokenizer("ViT-B-16")(texts, context_length=77), normalize=True)
        else:
            from open_clip.tokenizer import HFTokenizer

            full = enc.model.encode_text(HFTokenizer(str(enc.tokenizer_dir), context_length=256)(texts), normalize=True)
    assert float(nn.functional.cosine_similarity(short, full).min()) >= 0.99999
