"""MedCLIP (RyanWangZf/MedCLIP): ``medclip-vit`` (Swin-T) and ``medclip-rn50`` (ResNet-50).

The module trees below reproduce the authors' key names (``vision_model.model.*``,
``text_model.model.*``, ``logit_scale``) without their download-in-constructor. Weights: the
folder from the authors' zip or its ``pytorch_model.bin`` (a plain state dict). The
Bio_ClinicalBERT tokenizer is not in the zip: text encoding takes ``--tokenizer DIR``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from embedkit.errors import EmbedkitError
from embedkit.models import bert
from embedkit.models.base import Encoder, ImageTower, LoraTargets
from embedkit.models.checkpoints import file_digest, load_state_dict, state_digest, strict_load
from embedkit.models.images import MedclipPreprocess
from embedkit.models.registry import ModelSpec, register

WEIGHTS_NAME = "pytorch_model.bin"
ZIPS = {"vit": "https://storage.googleapis.com/pytrial/medclip-vit-pretrained.zip",
        "rn50": "https://storage.googleapis.com/pytrial/medclip-pretrained.zip"}
SWIN_FULL = {"image_size": 224, "embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "window_size": 7}
SWIN_TINY = {"image_size": 64, "embed_dim": 24, "depths": [1, 1, 2, 1], "num_heads": [1, 2, 2, 4], "window_size": 2}
# every layer: the patch embedding / stem conv, the blocks, and the final projection head (fc)
LORA = {"vit": LoraTargets(modules=("patch_embeddings.projection", "query", "key", "value", "attention.output.dense",
                                    "intermediate.dense", "output.dense", "q_proj", "k_proj", "v_proj", "o_proj", "fc1",
                                    "fc2", "projection_head")),
        "rn50": LoraTargets(modules=("conv1", "conv2", "conv3", "downsample.0", "fc"))}
# transformers >= 5 renamed Swin's block modules; the published file keeps the 4.x names.
SWIN_V5_RENAMES = (
    ("attention.self.relative_position_bias_table", "attention.relative_position_bias.relative_position_bias_table"),
    ("attention.self.query.", "attention.q_proj."), ("attention.self.key.", "attention.k_proj."),
    ("attention.self.value.", "attention.v_proj."), ("attention.output.dense.", "attention.o_proj."),
    ("intermediate.dense.", "mlp.fc1."), ("output.dense.", "mlp.fc2."),
)


class _Repeat3(nn.Module):
    """MedCLIP's vision forward: a 1-channel input is repeated to 3 channels."""

    @staticmethod
    def rgb(x: torch.Tensor) -> torch.Tensor:
        return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x


class VisionResNet(_Repeat3):
    def __init__(self, embed_dim: int = 512, tiny: bool = False):
        super().__init__()
        from torchvision.models.resnet import Bottleneck, ResNet, resnet50

        self.model = ResNet(Bottleneck, [1, 1, 1, 1], width_per_group=16) if tiny else resnet50(weights=None)
        self.model.fc = nn.Linear(self.model.fc.in_features, embed_dim, bias=False)

    def forward(self, x):
        return self.model(self.rgb(x))


class VisionSwin(_Repeat3):
    def __init__(self, embed_dim: int = 512, tiny: bool = False):
        super().__init__()
        from transformers import SwinConfig, SwinModel

        self.model = SwinModel(SwinConfig(**(SWIN_TINY if tiny else SWIN_FULL)))
        self.projection_head = nn.Linear(self.model.num_features, embed_dim, bias=False)

    def forward(self, x):
        return self.projection_head(self.model(self.rgb(x))["pooler_output"])


class TextModel(nn.Module):
    """Bio_ClinicalBERT (with pooler, as AutoModel built it) and a linear projection."""

    def __init__(self, bert_values: dict, embed_dim: int = 512):
        super().__init__()
        from transformers import BertModel

        self.model = BertModel(bert.bert_config(bert_values), add_pooling_layer=True)
        self.projection_head = nn.Linear(bert_values["hidden_size"], embed_dim, bias=False)

    def forward(self, input_ids, attention_mask):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask)["hidden_states"]
        # layers 1, 2 and 12, averaged over every position (padding included, as the authors did)
        embed = torch.stack([hidden[1], hidden[2], hidden[-1]]).permute(1, 0, 2, 3).mean(2).mean(1)
        return self.projection_head(embed)


class MedCLIPModel(nn.Module):
    def __init__(self, variant: str, tiny: bool, bert_values: dict, embed_dim: int):
        super().__init__()
        vision = VisionSwin if variant == "vit" else VisionResNet
        self.vision_model = vision(embed_dim, tiny)
        self.text_model = TextModel(bert_values, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))


def _rename_for_installed(model: nn.Module):
    """Map published Swin key names onto the installed transformers' names (identity on 4.x)."""
    installed = model.state_dict()
    if not any(".attention.q_proj." in k for k in installed):
        return None

    def rename(key: str) -> str:
        if ".blocks." in key:
            for old, new in SWIN_V5_RENAMES:
                key = key.replace(old, new)
        return key

    return rename


def _check_swin_index(model: nn.Module, state: dict) -> dict:
    """Drop published ``relative_position_index`` buffers the installed Swin does not save,
    after checking they equal the index it recomputes."""
    installed = model.state_dict()
    out = {}
    for k, v in state.items():
        if k.endswith("relative_position_index") and k not in installed:
            module = model.get_submodule(k.rsplit(".", 2)[0])
            ref = next((b for n, b in module.named_buffers() if n.endswith("relative_position_index")), None)
            if ref is not None and not torch.equal(ref.reshape(v.shape).to(v.dtype), v):
                raise EmbedkitError(f"{k}: the file's relative_position_index differs from the one Swin computes")
            continue
        out[k] = v
    return out


def _encoder(model: MedCLIPModel, variant: str, tiny: bool, tokenizer_dir: Path | None, digest: str) -> Encoder:
    model.eval()
    name = f"medclip-{variant}" + ("-tiny" if tiny else "")
    encode_texts = None
    if tokenizer_dir is not None:
        tokenizer = bert.load_tokenizer(tokenizer_dir)

        def encode_texts(texts: list[str]) -> torch.Tensor:
            tok = tokenizer(texts, truncation=True, padding=True, max_length=77, return_tensors="pt")
            device = model.logit_scale.device
            emb = model.text_model(tok["input_ids"].to(device), tok["attention_mask"].to(device))
            return nn.functional.normalize(emb, dim=-1)

    size = (SWIN_TINY if tiny else SWIN_FULL)["image_size"] if variant == "vit" else (64 if tiny else 224)
    return Encoder(
        name=name, model=model, embed_dim=model.text_model.projection_head.out_features,
        preprocess=MedclipPreprocess(size),
        image_tower=ImageTower(model.vision_model, lambda m, x: nn.functional.normalize(m(x), dim=-1)),
        text_encoder=encode_texts, normalized=True,
        description={"family": "medclip", "variant": variant, "tiny": tiny, "weights": digest,
                     "text": "Bio_ClinicalBERT lower-cased, max 77, mean of layers 1, 2, 12 over all positions, projection"},
        lora_targets=LORA[variant], logit_scale=float(model.logit_scale.detach().clamp(0, 4.6052).exp()),
        tokenizer_dir=tokenizer_dir,
    )


def _loader(variant: str):
    def load(weights: Path | None, tokenizer: Path | None, tiny: bool) -> Encoder:
        if weights is None:
            from embedkit.models.download import unzipped

            weights = unzipped(ZIPS[variant], f"medclip-{variant}",
                               f"medclip-{variant}: download {ZIPS[variant]}, unzip it and pass the folder "
                               f"(or its {WEIGHTS_NAME}) with --weights")
        file = weights / WEIGHTS_NAME if weights.is_dir() else weights
        state = load_state_dict(file)
        n_vocab = state.get("text_model.model.embeddings.word_embeddings.weight")
        bert_values = dict(bert.TINY_BERT if tiny else bert.CLINICAL_BERT)
        if tiny and n_vocab is not None:
            bert_values["vocab_size"] = n_vocab.shape[0]
        embed_dim = state["text_model.projection_head.weight"].shape[0] if "text_model.projection_head.weight" in state else 512
        model = MedCLIPModel(variant, tiny, bert_values, embed_dim)
        strict_load(model, _check_swin_index(model, state), source=file, rename=_rename_for_installed(model))
        return _encoder(model, variant, tiny, tokenizer, file_digest(file))

    return load


def _tiny(variant: str):
    def tiny(seed: int) -> Encoder:
        torch.manual_seed(seed)
        model = MedCLIPModel(variant, True, dict(bert.TINY_BERT, vocab_size=bert.tiny_vocab_size()), 32)
        return _encoder(model, variant, True, bert.tiny_tokenizer(), state_digest(model))

    return tiny


def save(encoder: Encoder, folder: Path) -> Path:
    """The authors' layout: ``folder/pytorch_model.bin`` (old ``position_ids`` key included);
    tiny models also get their tokenizer in ``folder/tokenizer/``."""
    folder.mkdir(parents=True, exist_ok=True)
    state = dict(encoder.model.state_dict())
    n_pos = encoder.model.text_model.model.config.max_position_embeddings
    state["text_model.model.embeddings.position_ids"] = torch.arange(n_pos)[None]
    torch.save(state, folder / WEIGHTS_NAME)
    bert.copy_tokenizer(encoder.tokenizer_dir, folder / "tokenizer")
    return folder


for _variant, _desc, _pre in (("vit", "MedCLIP Swin-T", "grey, pad to square, bicubic 224, MedCLIP mean/std"),
                              ("rn50", "MedCLIP ResNet-50", "grey, pad to square, bicubic 224, MedCLIP mean/std")):
    register(ModelSpec(
        name=f"medclip-{_variant}", family=f"{_desc} + Bio_ClinicalBERT", embed_dim=512, preprocessing=_pre,
        weight_formats=f"the authors' zip folder or its {WEIGHTS_NAME}; --tokenizer DIR for text",
        source=ZIPS[_variant], load=_loader(_variant), tiny=_tiny(_variant), save=save,
    ))
