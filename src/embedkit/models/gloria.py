"""GLoRIA (marshuang80/gloria), the CheXpert ResNet-50 checkpoint.

Weights: the PyTorch-Lightning ``chexpert_resnet50.ckpt``; its pickled OmegaConf config is read
through an allow-listed unpickler (nothing executed). Keys are stripped up to the last
``gloria.`` as the authors' ``load_gloria`` does. The image embedding is the global one
(``global_embedder`` of the pooled layer-4 features, 768-d, not normalised); the text embedding is
GLoRIA's sentence embedding (last 4 BERT layers, word pieces summed into words, mean over the
97 word slots, summed over layers). Zero-shot from the cache uses the global similarity only:
the local word-region branch needs per-word and per-region features that are not cached.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from embedkit.errors import EmbedkitError
from embedkit.models import bert
from embedkit.models.base import Encoder, ImageTower, LoraTargets
from embedkit.models.checkpoints import file_digest, load_lightning_checkpoint, plain_config, state_digest, strict_load
from embedkit.models.images import GloriaPreprocess
from embedkit.models.registry import ModelSpec, register

SOURCE = ("chexpert_resnet50.ckpt from the GLoRIA Box folder "
          "(https://stanfordmedicine.box.com/s/j5h7q99f3pfi7enc0dom73m4nsm6yzvh)")
CONFIG = {  # configs/chexpert_pretrain_config.yaml, the fields the code reads
    "phase": "pretrain",
    "model": {"text": {"bert_type": "emilyalsentzer/Bio_ClinicalBERT", "last_n_layers": 4, "aggregate_method": "sum",
                       "norm": False, "embedding_dim": 768, "freeze_bert": False, "agg_tokens": True},
              "vision": {"model_name": "resnet_50", "freeze_cnn": False, "pretrained": True},
              "gloria": {"local_loss_weight": 1.0, "global_loss_weight": 1.0, "temp1": 4.0, "temp2": 5.0, "temp3": 10.0}},
    "train": {"batch_size": 48},
    "data": {"text": {"word_num": 97}, "image": {"imsize": 256}},
    "transforms": {"norm": "half", "random_crop": {"crop_size": 224}},
}
TINY_SIZES = {"imsize": 36, "crop": 32, "upsample": 40}
LORA = LoraTargets(modules=("conv1", "conv2", "conv3", "downsample.0"))


class ImageEncoder(nn.Module):
    """ResNet-50 trunk (fc = Identity), global and local embedders; upsamples its input first."""

    def __init__(self, embedding_dim: int, tiny: bool, upsample: int):
        super().__init__()
        from torchvision.models.resnet import Bottleneck, ResNet, resnet50

        self.model = ResNet(Bottleneck, [1, 1, 1, 1], width_per_group=16) if tiny else resnet50(weights=None)
        self.model.fc = nn.Identity()
        self.global_embedder = nn.Linear(2048, embedding_dim)
        self.local_embedder = nn.Conv2d(1024, embedding_dim, kernel_size=1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = nn.functional.interpolate(x, size=(self.upsample, self.upsample), mode="bilinear", align_corners=True)
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
        return self.global_embedder(self.pool(x).flatten(1))


class TextEncoder(nn.Module):
    def __init__(self, bert_values: dict):
        super().__init__()
        from transformers import BertModel

        self.model = BertModel(bert.bert_config(bert_values), add_pooling_layer=True)


class GLoRIA(nn.Module):
    def __init__(self, bert_values: dict, embedding_dim: int, tiny: bool, upsample: int):
        super().__init__()
        self.text_encoder = TextEncoder(bert_values)
        self.img_encoder = ImageEncoder(embedding_dim, tiny, upsample)


def process_text(text: str) -> str:
    """GLoRIA's ``process_text`` cleaning: split on numbered items and '.', lower-case, keep \\w+
    tokens (ASCII only), drop pieces of at most one token, re-join."""
    pieces = [s for point in re.split(r"[0-9]+\.", text.replace("\n", " ")) for s in point.split(".")]
    sentences = []
    for piece in pieces:
        tokens = re.findall(r"\w+", piece.replace("\ufffd\ufffd", " ").lower())
        if len(tokens) <= 1:
            continue
        tokens = [t.encode("ascii", "ignore").decode("ascii") for t in tokens]
        sentences.append(" ".join(t for t in tokens if t))
    return " ".join(sentences)


def aggregate_words(hidden: torch.Tensor, tokens: list[str]) -> torch.Tensor:
    """(layers, seq, D) -> (layers, seq, D): word pieces summed into words up to and including
    [SEP], zero-padded back to ``seq`` (GLoRIA's ``aggregate_tokens``)."""
    words, bank = [], []
    for i, tok in enumerate(tokens):
        if tok == "[SEP]":
            words.append(hidden[:, bank].sum(1))
            words.append(hidden[:, i])
            break
        if tok.startswith("##"):
            bank.append(i)
        else:
            if bank:
                words.append(hidden[:, bank].sum(1))
            bank = [i]
    out = torch.zeros_like(hidden)
    out[:, : len(words)] = torch.stack(words, 1)
    return out


def _encoder(model: GLoRIA, cfg: dict, tiny: bool, tokenizer_dir: Path | None, digest: str) -> Encoder:
    model.eval()
    text_cfg = cfg["model"]["text"]
    word_num, last_n = cfg["data"]["text"]["word_num"], text_cfg["last_n_layers"]
    encode_texts = None
    if tokenizer_dir is not None:
        tokenizer = bert.load_tokenizer(tokenizer_dir)
        id_to_word = {v: k for k, v in tokenizer.get_vocab().items()}

        def encode_texts(texts: list[str]) -> torch.Tensor:
            tok = tokenizer([process_text(t) for t in texts], truncation=True, padding="max_length",
                            max_length=word_num, return_tensors="pt")
            device = next(model.parameters()).device
            out = model.text_encoder.model(**{k: v.to(device) for k, v in tok.items()})
            hidden = torch.stack(out["hidden_states"][-last_n:], 1)  # (B, layers, seq, D)
            agg = torch.stack([aggregate_words(h, [id_to_word[int(i)] for i in ids])
                               for h, ids in zip(hidden, tok["input_ids"])])
            return agg.mean(2).sum(1)  # mean over word slots, sum over layers

    sizes = TINY_SIZES if tiny else {"imsize": cfg["data"]["image"]["imsize"],
                                     "crop": cfg["transforms"]["random_crop"]["crop_size"], "upsample": 299}
    return Encoder(
        name="gloria-tiny" if tiny else "gloria", model=model, embed_dim=model.img_encoder.global_embedder.out_features,
        preprocess=GloriaPreprocess(sizes["imsize"], sizes["crop"]),
        image_tower=ImageTower(model.img_encoder, lambda m, x: m(x)), text_encoder=encode_texts, normalized=False,
        description={"family": "gloria", "tiny": tiny, "weights": digest, "upsample": sizes["upsample"],
                     "text": f"Bio_ClinicalBERT, process_text, max {word_num}, last {last_n} layers, word sum, "
                             "mean over word slots, sum over layers", "image": "global embedding"},
        # GLoRIA's global loss scales cosine similarities by temp3 (10)
        lora_targets=LORA, logit_scale=float(cfg["model"]["gloria"]["temp3"]), tokenizer_dir=tokenizer_dir,
    )


def _build(cfg: dict, tiny: bool, vocab_size: int | None = None) -> GLoRIA:
    values = dict(bert.TINY_BERT if tiny else bert.CLINICAL_BERT)
    if vocab_size is not None:
        values["vocab_size"] = vocab_size
    dim = values["hidden_size"] if tiny else cfg["model"]["text"]["embedding_dim"]
    return GLoRIA(values, dim, tiny, TINY_SIZES["upsample"] if tiny else 299)


def load(weights: Path | None, tokenizer: Path | None, tiny: bool) -> Encoder:
    """GLoRIA from its Lightning checkpoint."""
    if weights is None:
        raise EmbedkitError(f"gloria: download {SOURCE} and pass it with --weights PATH")
    ckpt = load_lightning_checkpoint(weights)
    cfg = plain_config(ckpt.get("hyper_parameters")) or CONFIG
    if cfg.get("phase", "pretrain") != "pretrain" or "model" not in cfg:
        raise EmbedkitError(f"{weights}: not a GLoRIA pretraining checkpoint (hyper_parameters.phase = {cfg.get('phase')!r})")
    cfg = _merge(CONFIG, cfg)
    state = {k[k.rfind("gloria.") + len("gloria."):] if "gloria." in k else k: v for k, v in ckpt["state_dict"].items()}
    vocab = state.get("text_encoder.model.embeddings.word_embeddings.weight")
    model = _build(cfg, tiny, vocab.shape[0] if (tiny and vocab is not None) else None)
    strict_load(model, state, source=weights)
    return _encoder(model, cfg, tiny, tokenizer, file_digest(weights))


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def tiny(seed: int) -> Encoder:
    torch.manual_seed(seed)
    model = _build(CONFIG, True, bert.tiny_vocab_size())
    return _encoder(model, CONFIG, True, bert.tiny_tokenizer(), state_digest(model))


def save(encoder: Encoder, path: Path) -> Path:
    """A PyTorch-Lightning 1.1.4 checkpoint as the authors published it: ``gloria.``-prefixed keys
    (old ``position_ids`` included) and the config as a pickled OmegaConf DictConfig."""
    from omegaconf import DictConfig, OmegaConf

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {f"gloria.{k}": v for k, v in encoder.model.state_dict().items()}
    n_pos = encoder.model.text_encoder.model.config.max_position_embeddings
    state["gloria.text_encoder.model.embeddings.position_ids"] = torch.arange(n_pos)[None]
    torch.save({"epoch": 0, "global_step": 0, "pytorch-lightning_version": "1.1.4", "state_dict": state,
                "hparams_name": "cfg", "hyper_parameters": OmegaConf.create(CONFIG), "hparams_type": DictConfig}, path)
    bert.copy_tokenizer(encoder.tokenizer_dir, path.parent / "tokenizer")
    return path


register(ModelSpec(
    name="gloria", family="GLoRIA ResNet-50 + Bio_ClinicalBERT (CheXpert)", embed_dim=768,
    preprocessing="grey, longer side 256 (cv2 area), zero-pad, centre crop 224, mean/std 0.5, upsample 299",
    weight_formats="PyTorch-Lightning chexpert_resnet50.ckpt; --tokenizer DIR for text",
    source=SOURCE, load=load, tiny=tiny, save=save,
))
