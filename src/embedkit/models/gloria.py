"""GLoRIA (marshuang80/gloria), the CheXpert ResNet-50 checkpoint.

Weights: the PyTorch-Lightning ``chexpert_resnet50.ckpt``; its pickled OmegaConf config is read
through an allow-listed unpickler (nothing executed). Keys are stripped up to the last
``gloria.`` as the authors' ``load_gloria`` does. The image embedding is the global one
(``global_embedder`` of the pooled layer-4 features, 768-d, not normalised); the text embedding is
GLoRIA's sentence embedding (last 4 BERT layers, word pieces summed into words, mean over the
97 word slots, summed over layers). Zero-shot uses GLoRIA's (local + global) / 2 similarity: the
local word-region branch needs per-word and per-region features, so extraction computes it for
every image and prompt (``LocalSimilarity``) and the cache stores the (images x prompts) matrix.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
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
LORA = LoraTargets(modules=("conv1", "conv2", "conv3", "downsample.0", "global_embedder"))  # conv1 includes the stem


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
        return self.both(x)[0]

    def both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(global (B, D), local (B, D, regions)): layer-4 pooled and layer-3 region embeddings."""
        m = self.model
        x = nn.functional.interpolate(x, size=(self.upsample, self.upsample), mode="bilinear", align_corners=True)
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        local = m.layer3(m.layer2(m.layer1(x)))
        glob = self.global_embedder(self.pool(m.layer4(local)).flatten(1))
        return glob, self.local_embedder(local).flatten(2)


@dataclass
class Words:
    """The prompts' word embeddings as GLoRIA's local branch sees them: per prompt the real word
    slots it reads (D, n) and how many zero-padded slots the slice also covers."""

    real: list[torch.Tensor]
    zeros: list[int]


class LocalSimilarity:
    """GLoRIA's ``get_local_similarities`` (temp1 4, exp(5 cos), max over words, log) for a batch of
    images against prepared prompts, exactly — including the source's quirk that a prompt's
    ``cap_len`` counts the characters of the raw prompt, so slots 1..cap_len of the 97 word slots
    are read and the zero-padded ones take part in the softmax over words (each adds exp(0)) and
    give cosine 0. Zero slots are accounted for in closed form instead of being multiplied."""

    def __init__(self, model: "GLoRIA", words_fn, temp1: float = 4.0, temp2: float = 5.0):
        self.model, self.words_fn, self.temp1, self.temp2 = model, words_fn, temp1, temp2

    def prepare(self, texts: list[str]) -> Words:
        real, zeros = [], []
        with torch.inference_mode():
            for start in range(0, len(texts), 64):
                for text, (emb, n_words) in zip(texts[start:start + 64], self.words_fn(texts[start:start + 64])):
                    cap_len = len([c for c in text if c != "["])
                    n = min(n_words - 1, cap_len)  # slot 0 is [CLS]; words and [SEP] follow
                    real.append(emb[:, 1:1 + n].float())
                    zeros.append(cap_len - n)
        return Words(real, zeros)

    def __call__(self, images: torch.Tensor, words: Words) -> torch.Tensor:
        """(B, M) local similarities of preprocessed images to the prepared prompts."""
        with torch.inference_mode():
            context = self.model.img_encoder.both(images)[1].float()              # (B, D, R)
            out = [self._one(context, w, z) for w, z in zip(words.real, words.zeros)]
        return torch.stack(out, 1)

    def _one(self, context: torch.Tensor, word: torch.Tensor, zeros: int) -> torch.Tensor:
        logits = torch.einsum("bdr,dw->brw", context, word)                       # (B, R, n)
        if zeros:  # zero slots: logit 0 each in the softmax over words
            pad = torch.full_like(logits[..., :1], math.log(zeros))
            attn = torch.softmax(torch.cat([logits, pad], -1), -1)[..., :-1]
        else:
            attn = torch.softmax(logits, -1)
        attn = torch.softmax(self.temp1 * attn.transpose(1, 2), -1)               # (B, n, R) over regions
        weighted = torch.einsum("bdr,bwr->bdw", context, attn)                    # (B, D, n)
        w12 = (weighted * word[None]).sum(1)
        cos = w12 / (weighted.norm(dim=1) * word.norm(dim=0)[None]).clamp(min=1e-8)
        best = cos.max(1).values
        if zeros:
            best = best.clamp(min=0.0)  # a zero slot's cosine is 0
        return self.temp2 * best  # log(max exp(temp2 cos)) = temp2 * max cos


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


def _n_words(tokens: list[str]) -> int:
    """How many word slots ``aggregate_words`` fills: [CLS], the whole words, [SEP]."""
    sep = tokens.index("[SEP]") if "[SEP]" in tokens else len(tokens)
    return 1 + sum(1 for t in tokens[1:sep] if not t.startswith("##")) + 1


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
    encode_texts = local = None
    if tokenizer_dir is not None:
        tokenizer = bert.load_tokenizer(tokenizer_dir)
        id_to_word = {v: k for k, v in tokenizer.get_vocab().items()}

        def word_slots(texts: list[str]) -> tuple[torch.Tensor, list[int]]:
            """(B, layers, 97, D) words after piece aggregation, and each prompt's aggregated count."""
            tok = tokenizer([process_text(t) for t in texts], truncation=True, padding="max_length",
                            max_length=word_num, return_tensors="pt")
            device = next(model.parameters()).device
            out = model.text_encoder.model(**{k: v.to(device) for k, v in tok.items()})
            hidden = torch.stack(out["hidden_states"][-last_n:], 1)  # (B, layers, seq, D)
            tokens = [[id_to_word[int(i)] for i in ids] for ids in tok["input_ids"]]
            return (torch.stack([aggregate_words(h, t) for h, t in zip(hidden, tokens)]),
                    [_n_words(t) for t in tokens])

        def encode_texts(texts: list[str]) -> torch.Tensor:
            return word_slots(texts)[0].mean(2).sum(1)  # mean over word slots, sum over layers

        def words(texts: list[str]):
            agg, counts = word_slots(texts)
            return [(w.sum(0).T, n) for w, n in zip(agg, counts)]  # (D, 97) word embeddings: sum over layers

        local = LocalSimilarity(model, words, temp1=cfg["model"]["gloria"]["temp1"],
                                temp2=cfg["model"]["gloria"]["temp2"])

    sizes = TINY_SIZES if tiny else {"imsize": cfg["data"]["image"]["imsize"],
                                     "crop": cfg["transforms"]["random_crop"]["crop_size"], "upsample": 299}
    return Encoder(
        name="gloria-tiny" if tiny else "gloria", model=model, embed_dim=model.img_encoder.global_embedder.out_features,
        preprocess=GloriaPreprocess(sizes["imsize"], sizes["crop"]),
        image_tower=ImageTower(model.img_encoder, lambda m, x: m(x)), text_encoder=encode_texts, normalized=False,
        description={"family": "gloria", "tiny": tiny, "weights": digest, "upsample": sizes["upsample"],
                     "text": f"Bio_ClinicalBERT, process_text, max {word_num}, last {last_n} layers, word sum, "
                             "mean over word slots, sum over layers", "image": "global embedding",
                     "local_similarity": "layer-3 regions x words, temp1 4, temp2 5, max over words, "
                                         "slots 1..characters of the prompt (GLoRIA's cap_len)"},
        pair_similarity=local,
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
