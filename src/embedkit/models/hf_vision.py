"""Any Hugging Face vision backbone (``--model hf-vision --weights DIR [--name NAME]``), e.g. DINOv2 or
RAD-DINO: ``AutoModel`` from a local folder (config.json, model.safetensors or pytorch_model.bin,
preprocessor_config.json), or ``hf-hub:org/repo`` online. The embedding is ``pooler_output`` when the
model has one (DINOv2/RAD-DINO: the layer-normed CLS token, as RAD-DINO's model card uses), else the
CLS token of ``last_hidden_state``; not normalised. Vision only: extraction, probes and fine-tuning
work, zero-shot refuses it. No remote code: only architectures transformers itself ships load.
"""

from __future__ import annotations

from pathlib import Path

import torch

from embedkit.errors import EmbedkitError
from embedkit.models.base import Encoder, ImageTower, LoraTargets
from embedkit.models.checkpoints import file_digest, state_digest
from embedkit.models.hf_processor import HFPreprocess, check_folder, weights_file
from embedkit.models.registry import ModelSpec, register


def _pool(model, x: torch.Tensor) -> torch.Tensor:
    out = model(pixel_values=x)
    pooled = getattr(out, "pooler_output", None)
    return pooled if pooled is not None else out.last_hidden_state[:, 0]


def _encoder(model, name: str, digest: str, preprocess) -> Encoder:
    model.eval()
    return Encoder(
        name=name, model=model, embed_dim=int(model.config.hidden_size), preprocess=preprocess,
        image_tower=ImageTower(model, _pool), text_encoder=None, normalized=False,
        description={"family": "hf-vision", "config": model.config.to_dict(), "weights": digest,
                     "pooling": "pooler_output, else CLS of last_hidden_state"},
        lora_targets=LoraTargets.discover(model), vision_only=True,
    )


def load(weights: Path | None, tokenizer: Path | None, tiny: bool, *, arch: str | None = None,
         name: str = "hf-vision") -> Encoder:
    from transformers import AutoModel

    if weights is None:
        raise EmbedkitError("hf-vision: give --weights FOLDER (a transformers vision model, e.g. RAD-DINO)")
    folder = check_folder(weights, "hf-vision")
    file = weights_file(folder)
    try:
        model = AutoModel.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False,
                                          use_safetensors=file.suffix == ".safetensors")
    except ValueError as exc:   # an architecture transformers does not ship (would need remote code)
        raise EmbedkitError(f"{folder}: transformers cannot build this model without remote code ({str(exc)[:120]})") from None
    return _encoder(model, name, file_digest(file), HFPreprocess.from_folder(folder))


def tiny_model(seed: int):
    """A small random DINOv2 (the tests save it in the published layout)."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    return Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                    image_size=32, patch_size=8))


def _processor(size: int):
    from transformers import BitImageProcessor

    return BitImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                             image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225], do_convert_rgb=True)


def tiny(seed: int) -> Encoder:
    model = tiny_model(seed)
    return _encoder(model, "hf-vision-tiny", state_digest(model), HFPreprocess.of(_processor(32)))


def save(encoder: Encoder, path: Path) -> Path:
    encoder.model.save_pretrained(str(path), safe_serialization=True)
    _processor(encoder.model.config.image_size).save_pretrained(str(path))
    return path


register(ModelSpec(
    name="hf-vision", family="any Hugging Face vision backbone, e.g. DINOv2 / RAD-DINO (generic; vision only)",
    embed_dim=0, preprocessing="the folder's preprocessor_config.json (transformers image processor)",
    weight_formats="transformers folder: config.json, model.safetensors|pytorch_model.bin, preprocessor_config.json; "
                   "hf-hub:org/repo online",
    source="https://huggingface.co/microsoft/rad-dino", load=load, tiny=tiny, save=save, generic=True,
))
