"""What the Hugging Face adapters share: the checkpoint's own image processor as preprocessing, and
safe loading (local files only, safetensors or weights-only pickles, never remote code)."""

from __future__ import annotations

import json
from pathlib import Path

from embedkit.errors import EmbedkitError

PROCESSOR = "preprocessor_config.json"


class HFPreprocess:
    """A transformers image processor: one PIL image -> (C, H, W); ``config`` is what identifies it."""

    def __init__(self, processor, config: dict):
        self.processor, self.config = processor, config

    @classmethod
    def from_folder(cls, folder: Path) -> "HFPreprocess":
        """``AutoImageProcessor`` from the checkpoint's ``preprocessor_config.json`` (slow, as saved)."""
        from transformers import AutoImageProcessor

        if not (folder / PROCESSOR).is_file():
            raise EmbedkitError(f"{folder}: no {PROCESSOR}; the image processor must come with the checkpoint "
                                "(its resize, crop and normalisation are never guessed)")
        return cls(AutoImageProcessor.from_pretrained(str(folder), local_files_only=True, use_fast=False),
                   json.loads((folder / PROCESSOR).read_text()))

    @classmethod
    def of(cls, processor) -> "HFPreprocess":
        """A processor built in code (the tiny variants), identified by its own dict."""
        return cls(processor, processor.to_dict())

    def __call__(self, img):
        return self.processor(images=img.convert("RGB"), return_tensors="pt")["pixel_values"][0]

    def describe(self) -> dict:
        return {"kind": "hf", **self.config}


def check_folder(folder: Path, what: str) -> Path:
    """A local checkpoint folder with config.json and weights (model.safetensors or pytorch_model.bin)."""
    if str(folder).startswith("hf-hub:"):
        from embedkit.models.download import offline

        if offline():
            raise EmbedkitError(f"{what}: offline; download {str(folder)[7:]} and pass --weights FOLDER")
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(folder)[7:]))
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise EmbedkitError(f"{folder}: not a Hugging Face model folder (config.json beside model.safetensors); "
                            f"give {what} --weights FOLDER")
    if not any((folder / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")):
        raise EmbedkitError(f"{folder}: no model.safetensors or pytorch_model.bin beside config.json")
    return folder


def weights_file(folder: Path) -> Path:
    return next(folder / f for f in ("model.safetensors", "pytorch_model.bin") if (folder / f).is_file())
