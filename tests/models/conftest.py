"""Tiny encoders saved in their families' published formats, once per test session."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from embedkit.models import get, load_encoder

PUBLISHED = {  # family -> (path inside the fixture folder, tokenizer folder or None)
    "clip": ("open_clip_pytorch_model.bin", None),
    "biomedclip": ("", None),
    "medclip-vit": ("", "tokenizer"),
    "medclip-rn50": ("pytorch_model.bin", "tokenizer"),
    "gloria": ("chexpert_resnet50.ckpt", "tokenizer"),
}


@pytest.fixture(scope="session")
def published(tmp_path_factory):
    """name -> (tiny encoder, weights path, tokenizer dir), each saved in the published format."""
    out = {}
    for name, (inner, tok) in PUBLISHED.items():
        folder = tmp_path_factory.mktemp(name)
        enc = load_encoder(f"{name}-tiny", seed=1)
        saved = get(name).save(enc, folder / inner if name in ("clip", "gloria") else folder)
        out[name] = (enc, folder / inner if inner else saved, folder / tok if tok else None)
    return out


@pytest.fixture(scope="session")
def images():
    """Four small structured grayscale images (random weights need structure to tell images apart)."""
    y, x = np.mgrid[0:48, 0:40]
    pics = [(128 + 100 * np.sin(x / (2 + k)) * np.cos(y / (3 + k))).clip(0, 255).astype(np.uint8) for k in range(4)]
    return [Image.fromarray(p, mode="L") for p in pics]


def batch(encoder, imgs) -> torch.Tensor:
    return torch.stack([encoder.preprocess(i) for i in imgs])
