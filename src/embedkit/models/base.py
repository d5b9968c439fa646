"""The one interface every model family gives the rest of embedkit."""

from __future__ import annotations

import json
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable

import torch
from PIL import Image
from torch import nn


@dataclass(frozen=True)
class LoraTargets:
    """What LoRA adapts: module names (peft ``target_modules``) and raw parameters (``target_parameters``)."""

    modules: tuple[str, ...] = ()
    parameters: tuple[str, ...] = ()

    @classmethod
    def discover(cls, tower: nn.Module, *, skip: tuple[str, ...] = ()) -> "LoraTargets":
        """Every attention, MLP and convolution layer of a tower, found generically: the names (last
        component, as peft matches them) of each ``MultiheadAttention`` (adapted whole: its ``out_proj`` is
        read directly, so it never trains on its own), and of every ``Linear`` and ``Conv2d`` outside one."""
        names, inside = set(), []
        for name, module in tower.named_modules():
            if not name or any(name.startswith(p + ".") for p in inside):
                continue
            last = name.rsplit(".", 1)[-1]
            if isinstance(module, nn.MultiheadAttention):
                inside.append(name)
                names.add(last)
            elif isinstance(module, (nn.Linear, nn.Conv2d)) and last not in skip:
                names.add(last)
        return cls(modules=tuple(sorted(names)))


@dataclass
class Encoder:
    """A loaded encoder: preprocessing, image and text towers, and what identifies its numbers.

    ``image_tower`` maps preprocessed images (N, C, H, W) to embeddings (N, D), as the authors
    define them (``normalized`` says whether they L2-normalise). ``encode_texts`` tokenises and
    pools prompts with the family's own recipe.
    """

    name: str
    model: nn.Module          # the whole published module (what the weights file holds)
    embed_dim: int
    preprocess: Callable[[Image.Image], torch.Tensor]
    image_tower: nn.Module
    text_encoder: Callable[[list[str]], torch.Tensor] | None
    normalized: bool
    description: dict
    lora_targets: LoraTargets = field(default_factory=LoraTargets)
    logit_scale: float = 100.0
    tokenizer_dir: Path | None = None  # where the tokenizer files came from (saved beside tiny weights)
    vision_only: bool = False          # no text tower: no prompt embeddings, no zero-shot
    # an image-prompt similarity that needs more than the two embeddings (GLoRIA's local branch):
    # ``prepare(prompts)`` once, then ``(images, prepared) -> (B, M)`` per batch at extraction
    pair_similarity: object | None = None

    def encode_images(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) preprocessed images -> (N, D) embeddings."""
        device = next(self.image_tower.parameters()).device
        return self.image_tower(batch.to(device))

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Prompts -> (M, D) embeddings; one call pads to the longest prompt, as the authors' per-class calls did."""
        if self.text_encoder is None:
            from embedkit.errors import EmbedkitError

            raise EmbedkitError(f"{self.name}: text encoding needs a tokenizer; pass --tokenizer DIR "
                                "(the Bio_ClinicalBERT tokenizer files: vocab.txt)")
        return self.text_encoder(texts)

    def to(self, device: str | torch.device) -> "Encoder":
        self.model.to(device)
        return self

    def describe(self) -> str:
        """Stable JSON of everything that changes the numbers (for cache keys)."""
        return json.dumps({"name": self.name, "embed_dim": self.embed_dim, "normalized": self.normalized,
                           "preprocess": self.preprocess.describe(), **self.description}, sort_keys=True)


class ImageTower(nn.Module):
    """Wraps ``fn(model, x)`` so a tower is a module (for LoRA, DDP and ``.to``)."""

    def __init__(self, model: nn.Module, forward: Callable[[nn.Module, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.model = model
        self._forward = forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(self.model, x)
