"""ViT-B/16 pretrained on ImageNet (timm), the paper's stand-in for CLIP full fine-tuning.

"For CLIP, fine-tuning the entire image encoder was not allowed due to the hardware limitation, we
used a ViT pretrained on ImageNet for fine-tuning instead." Vision only: extraction, probes and
fine-tuning work; zero-shot refuses it (no text tower).

Weights: timm's Hugging Face folder (``config.json`` with ``architecture``, ``pretrained_cfg`` and
optional ``model_args``, beside ``model.safetensors`` or ``pytorch_model.bin``), or a bare state dict
file, read as ``vit_base_patch16_224.augreg2_in21k_ft_in1k`` (timm's default ViT-B/16). The
embedding is timm's pooled pre-logits feature (class token after the final norm), not normalised.
Preprocessing comes from the checkpoint's ``pretrained_cfg`` (timm's eval transform).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from embedkit.errors import EmbedkitError
from embedkit.models.base import Encoder, ImageTower, LoraTargets
from embedkit.models.checkpoints import file_digest, load_state_dict, state_digest, strict_load
from embedkit.models.registry import ModelSpec, register

HUB_ID = "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k"
DEFAULT_CONFIG = {
    "architecture": "vit_base_patch16_224", "num_classes": 1000, "global_pool": "token",
    "pretrained_cfg": {"tag": "augreg2_in21k_ft_in1k", "input_size": [3, 224, 224], "interpolation": "bicubic",
                       "crop_pct": 0.9, "crop_mode": "center", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                       "num_classes": 1000, "first_conv": "patch_embed.proj", "classifier": "head"},
}
TINY_CONFIG = dict(DEFAULT_CONFIG, num_classes=10,
                   model_args={"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2},
                   pretrained_cfg=dict(DEFAULT_CONFIG["pretrained_cfg"], input_size=[3, 32, 32], num_classes=10))
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# every linear of every block (fused qkv, attention and MLP projections) and the patch-embedding conv
# ("proj" also matches patch_embed.proj, a Conv2d, which peft adapts as a LoRA conv)
LORA = LoraTargets(modules=("qkv", "proj", "fc1", "fc2"))


@dataclass(frozen=True)
class TimmPreprocess:
    """timm's eval transform from a ``pretrained_cfg``: resize the shorter side to size / crop_pct,
    centre crop, RGB, mean/std."""

    size: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_cfg(cls, cfg: dict) -> "TimmPreprocess":
        if cfg.get("crop_mode", "center") != "center":
            raise EmbedkitError(f"timm crop_mode {cfg['crop_mode']!r} is not supported; only 'center'")
        return cls(int(cfg["input_size"][-1]), float(cfg.get("crop_pct", 0.875)), cfg.get("interpolation", "bicubic"),
                   tuple(cfg["mean"]), tuple(cfg["std"]))

    def __call__(self, img):
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as F

        resize = math.floor(self.size / self.crop_pct)
        img = F.resize(img.convert("RGB"), resize, interpolation=InterpolationMode(self.interpolation), antialias=True)
        img = F.center_crop(img, [self.size, self.size])
        return F.normalize(F.to_tensor(img), self.mean, self.std)

    def describe(self) -> dict:
        return {"kind": "timm", "size": self.size, "crop_pct": self.crop_pct, "interpolation": self.interpolation,
                "mean": self.mean, "std": self.std}


def build(config: dict):
    """The timm model a config describes (random weights, nothing downloaded)."""
    import timm

    try:
        return timm.create_model(config["architecture"], pretrained=False, num_classes=config.get("num_classes", 1000),
                                 global_pool=config.get("global_pool", "token"), **config.get("model_args", {}))
    except RuntimeError as exc:  # timm: "Unknown model"
        raise EmbedkitError(f"vit-imagenet: timm does not know architecture {config['architecture']!r} ({exc})") from None


def _encoder(model, config: dict, name: str, weights_digest: str) -> Encoder:
    model.reset_classifier(0)  # forward -> pooled pre-logits features
    model.eval()
    return Encoder(
        name=name, model=model, embed_dim=model.num_features, preprocess=TimmPreprocess.from_cfg(config["pretrained_cfg"]),
        image_tower=ImageTower(model, lambda m, x: m(x)), text_encoder=None, normalized=False,
        description={"family": "vit-imagenet", "config": config, "weights": weights_digest},
        lora_targets=LORA, vision_only=True,
    )


def _read_folder(folder: Path) -> tuple[dict, Path]:
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise EmbedkitError(f"{folder}: no config.json; expected timm's Hugging Face folder ({HUB_ID})")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise EmbedkitError(f"{cfg_path}: not valid JSON ({exc})") from None
    if "architecture" not in config or "pretrained_cfg" not in config:
        raise EmbedkitError(f"{cfg_path}: not a timm config (needs 'architecture' and 'pretrained_cfg')")
    for f in WEIGHT_FILES:
        if (folder / f).is_file():
            return config, folder / f
    raise EmbedkitError(f"{folder}: no {' or '.join(WEIGHT_FILES)} beside config.json")


def load(weights: Path | None, tokenizer: Path | None, tiny: bool) -> Encoder:
    """From timm's HF folder or a bare state dict (read with the default ViT-B/16 config)."""
    if weights is None:
        return _from_hub()
    if weights.is_dir():
        config, file = _read_folder(weights)
    else:
        config, file = (TINY_CONFIG if tiny else DEFAULT_CONFIG), weights
    model = build(config)
    strict_load(model, load_state_dict(file), source=file)
    return _encoder(model, config, "vit-imagenet-tiny" if tiny else "vit-imagenet", file_digest(file))


def _from_hub() -> Encoder:
    from embedkit.models.download import offline

    if offline():
        raise EmbedkitError(f"vit-imagenet: offline; download https://huggingface.co/{HUB_ID} (config.json and "
                            "model.safetensors) and pass --weights FOLDER")
    try:
        import timm

        model = timm.create_model(f"hf-hub:{HUB_ID}", pretrained=True)
    except Exception as exc:
        raise EmbedkitError(f"vit-imagenet: could not fetch {HUB_ID} ({str(exc).splitlines()[0][:120]}); "
                            "download it and pass --weights FOLDER") from None
    return _encoder(model, DEFAULT_CONFIG, "vit-imagenet", f"hf-hub:{HUB_ID}")


def tiny(seed: int) -> Encoder:
    torch.manual_seed(seed)
    model = build(TINY_CONFIG)
    return _encoder(model, TINY_CONFIG, "vit-imagenet-tiny", state_digest(model))


def save(encoder: Encoder, path: Path) -> Path:
    """timm's Hugging Face layout: ``path/config.json`` + ``path/model.safetensors``. The encoder
    dropped its classifier, so a freshly initialised head of the config's size is saved with it."""
    from safetensors.torch import save_file

    model, config = encoder.model, encoder.description["config"]
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model.reset_classifier(config["num_classes"])
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    model.reset_classifier(0)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    save_file(state, str(path / "model.safetensors"))
    return path


register(ModelSpec(
    name="vit-imagenet", family="ViT-B/16 on ImageNet (timm; vision only — the paper's CLIP full fine-tuning row)",
    embed_dim=768, preprocessing="from the checkpoint's pretrained_cfg (timm eval: shorter side 224/0.9 bicubic, "
                                 "centre crop 224, mean/std 0.5)",
    weight_formats="timm HF folder (config.json + model.safetensors|pytorch_model.bin) or a state dict file",
    source=f"https://huggingface.co/{HUB_ID}", load=load, tiny=tiny, save=save,
))
