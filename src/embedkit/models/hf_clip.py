"""Any Hugging Face CLIP or SigLIP (``--model hf-clip --weights DIR [--name NAME]``): a transformers
``CLIPModel`` or ``SiglipModel`` folder (config.json, model.safetensors or pytorch_model.bin,
preprocessor_config.json, tokenizer files), or ``hf-hub:org/repo`` when online.

Image embeddings are ``get_image_features`` L2-normalised; prompts are tokenised by the folder's own
tokenizer (SigLIP pads to max_length, as it was trained) and ``get_text_features`` L2-normalised. The
logit scale is the checkpoint's. Only the two known model types load: no remote code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from embedkit.errors import EmbedkitError
from embedkit.models.base import Encoder, ImageTower, LoraTargets
from embedkit.models.checkpoints import file_digest, state_digest
from embedkit.models.hf_processor import HFPreprocess, check_folder, weights_file
from embedkit.models.registry import ModelSpec, register

TYPES = ("clip", "siglip")


def _classes(model_type: str):
    from transformers import CLIPModel, SiglipModel

    return {"clip": CLIPModel, "siglip": SiglipModel}[model_type]


class _Vision(torch.nn.Module):
    """The image path alone (vision transformer and projection), so LoRA and fine-tuning touch only it."""

    def __init__(self, model):
        super().__init__()
        self.vision, self.projection = model.vision_model, getattr(model, "visual_projection", None)


def _encoder(model, name: str, model_type: str, digest: str, preprocess, tokenizer) -> Encoder:
    model.eval()
    max_length = "max_length" if model_type == "siglip" else "longest"

    def encode_texts(texts: list[str]) -> torch.Tensor:
        tokens = tokenizer(texts, padding=max_length, truncation=True, return_tensors="pt",
                           max_length=model.config.text_config.max_position_embeddings)
        tokens = {k: v.to(next(model.parameters()).device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        if model_type == "siglip":
            tokens.pop("attention_mask", None)       # SigLIP's text tower was trained without one
        return torch.nn.functional.normalize(model.get_text_features(**tokens), dim=-1)

    def tower(m, x):   # get_image_features: the pooled vision output, projected (CLIP) or as it is (SigLIP)
        pooled = m.vision(pixel_values=x).pooler_output
        return torch.nn.functional.normalize(m.projection(pooled) if m.projection is not None else pooled, dim=-1)

    return Encoder(
        name=name, model=model, embed_dim=int(model.config.projection_dim if model_type == "clip"
                                              else model.config.vision_config.hidden_size),
        preprocess=preprocess, image_tower=ImageTower(_Vision(model), tower),
        text_encoder=encode_texts if tokenizer is not None else None, normalized=True,
        description={"family": "hf-clip", "model_type": model_type, "config": model.config.to_dict(), "weights": digest},
        lora_targets=LoraTargets.discover(model.vision_model), logit_scale=float(model.logit_scale.detach().exp()),
    )


def load(weights: Path | None, tokenizer: Path | None, tiny: bool, *, arch: str | None = None,
         name: str = "hf-clip") -> Encoder:
    if weights is None:
        raise EmbedkitError("hf-clip: give --weights FOLDER (a transformers CLIPModel or SiglipModel folder)")
    folder = check_folder(weights, "hf-clip")
    model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    if model_type not in TYPES:
        raise EmbedkitError(f"{folder}/config.json: model_type {model_type!r}; hf-clip loads {' or '.join(TYPES)} "
                            "(a vision-only backbone: --model hf-vision)")
    file = weights_file(folder)
    model = _classes(model_type).from_pretrained(str(folder), local_files_only=True,
                                                 use_safetensors=file.suffix == ".safetensors")
    return _encoder(model, name, model_type, file_digest(file), HFPreprocess.from_folder(folder), _tokenizer(folder))


def _tokenizer(folder: Path):
    """The folder's tokenizer, or None when it ships none (or one transformers cannot load here, e.g. without
    protobuf): the image embeddings are extracted, and zero-shot says it needs the tokenizer files."""
    import warnings

    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, ImportError) as exc:
        warnings.warn(f"{folder}: no usable tokenizer ({type(exc).__name__}); extracting image embeddings only — "
                      "zero-shot needs the folder's tokenizer files (tokenizer.json or vocab.json + merges.txt)",
                      stacklevel=2)
        return None


def tiny_model(seed: int, model_type: str = "clip"):
    """A small random CLIPModel (the tests save it in the published layout)."""
    from transformers import CLIPConfig

    torch.manual_seed(seed)
    cfg = CLIPConfig(projection_dim=16,
                     text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                  "num_attention_heads": 2, "vocab_size": 100, "max_position_embeddings": 32},
                     vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                    "num_attention_heads": 2, "image_size": 32, "patch_size": 8})
    return _classes(model_type)(cfg)


CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-',.()"


def tiny_tokenizer(folder: Path):
    """A small character-level CLIP BPE tokenizer (vocab.json, merges.txt) for the tiny model's 100 ids."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in CHARS:
        vocab[ch], vocab[ch + "</w>"] = len(vocab), len(vocab) + 1
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>")
    tok.save_pretrained(str(folder))
    return tok


def tiny(seed: int) -> Encoder:
    import tempfile

    from transformers import CLIPImageProcessor

    model = tiny_model(seed)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return _encoder(model, "hf-clip-tiny", "clip", state_digest(model), HFPreprocess.of(processor),
                    tiny_tokenizer(Path(tempfile.mkdtemp(prefix="hf-clip-tiny-tok-"))))


def save(encoder: Encoder, path: Path) -> Path:
    """The transformers layout: ``save_pretrained`` (config.json + model.safetensors), the image processor and a
    tokenizer (the tiny character-level one: the tiny model has 100 token ids)."""
    from transformers import CLIPImageProcessor

    encoder.model.save_pretrained(str(path), safe_serialization=True)
    tiny_tokenizer(path)
    CLIPImageProcessor(size={"shortest_edge": encoder.model.config.vision_config.image_size},
                       crop_size={"height": encoder.model.config.vision_config.image_size,
                                  "width": encoder.model.config.vision_config.image_size}).save_pretrained(str(path))
    return path


register(ModelSpec(
    name="hf-clip", family="any Hugging Face CLIPModel or SiglipModel (generic; --name)", embed_dim=0,
    preprocessing="the folder's preprocessor_config.json (transformers image processor)",
    weight_formats="transformers folder: config.json, model.safetensors|pytorch_model.bin, preprocessor_config.json, "
                   "tokenizer files; hf-hub:org/repo online",
    source="https://huggingface.co/docs/transformers/model_doc/clip", load=load, tiny=tiny, save=save, generic=True,
))
