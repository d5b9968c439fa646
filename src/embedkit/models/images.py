"""Image decoding and each family's preprocessing, as callables on a PIL image.

Inputs may be 8-bit or 16-bit grayscale, RGB, RGBA or palette PNG/JPEG; ``to_8bit`` converts
them deliberately (16-bit scaled by 1/257, alpha dropped) before a family's own steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from embedkit.errors import EmbedkitError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MEDCLIP_MEAN, MEDCLIP_STD = 0.5862785803043838, 0.27950088968644304


def decode(path: str | Path) -> Image.Image:
    """Open and fully decode an image file; a bad file raises EmbedkitError naming it."""
    try:
        with Image.open(path) as img:
            img.load()
            return to_8bit(img)
    except FileNotFoundError:
        raise EmbedkitError(f"{path}: image file not found") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise EmbedkitError(f"{path}: unreadable or truncated image ({exc})") from None


def to_8bit(img: Image.Image) -> Image.Image:
    """8-bit 'L' or 'RGB': 16-bit/32-bit grayscale scaled to 0-255, alpha and palettes removed."""
    if img.mode in ("L", "RGB"):
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(np.rint(arr * 255.0 / scale), 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("LA", "1"):
        return img.convert("L")
    if img.mode in ("RGBA", "P", "PA", "CMYK", "YCbCr"):
        return img.convert("RGB")
    raise EmbedkitError(f"unsupported image mode {img.mode!r}")


@dataclass(frozen=True)
class ClipPreprocess:
    """open_clip's eval transform: RGB, bicubic shortest-side resize, centre crop, mean/std."""

    size: int = 224
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD

    def __call__(self, img: Image.Image) -> torch.Tensor:
        from torchvision.transforms import functional as F
        from torchvision.transforms import InterpolationMode

        img = F.resize(img.convert("RGB"), self.size, interpolation=InterpolationMode.BICUBIC, antialias=True)
        img = F.center_crop(img, [self.size, self.size])
        return F.normalize(F.to_tensor(img), self.mean, self.std)

    def describe(self) -> dict:
        return {"kind": "clip", "size": self.size, "mean": self.mean, "std": self.std, "resize": "bicubic-shortest"}


@dataclass(frozen=True)
class MedclipPreprocess:
    """MedCLIP's processor: grayscale, pad onto a black square, bicubic resize, one mean/std (1 channel)."""

    size: int = 224

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = img.convert("L")
        w, h = img.size
        side = max(self.size, w, h)
        canvas = Image.new("L", (side, side), 0)
        canvas.paste(img, (int((side - w) / 2), int((side - h) / 2)))
        canvas = canvas.resize((self.size, self.size), Image.BICUBIC)
        arr = (np.asarray(canvas, dtype=np.float32) / 255.0 - MEDCLIP_MEAN) / MEDCLIP_STD
        return torch.from_numpy(arr)[None]

    def describe(self) -> dict:
        return {"kind": "medclip", "size": self.size, "mean": MEDCLIP_MEAN, "std": MEDCLIP_STD, "pad": "black-square"}


@dataclass(frozen=True)
class GloriaPreprocess:
    """GLoRIA's test transform: grayscale, longer side to ``scale`` (INTER_AREA), zero-pad to a
    square, RGB, centre crop ``crop``, mean/std 0.5. (The model upsamples to 299 itself.)"""

    scale: int = 256
    crop: int = 224

    def __call__(self, img: Image.Image) -> torch.Tensor:
        import cv2

        arr = np.asarray(img.convert("L"))
        h, w = arr.shape
        if h >= w:
            size = (self.scale, int(w * (self.scale / h)))
        else:
            size = (int(h * (self.scale / w)), self.scale)
        arr = cv2.resize(arr, size[::-1], interpolation=cv2.INTER_AREA)
        pad = self.scale - (arr.shape[1] if h >= w else arr.shape[0])
        before, after = math.floor(pad / 2), math.ceil(pad / 2)
        arr = np.pad(arr, [(0, 0), (before, after)] if h >= w else [(before, after), (0, 0)], constant_values=0)
        top = int(round((self.scale - self.crop) / 2.0))
        arr = arr[top:top + self.crop, top:top + self.crop]
        t = torch.from_numpy(arr.astype(np.float32) / 255.0)[None].repeat(3, 1, 1)
        return (t - 0.5) / 0.5

    def describe(self) -> dict:
        return {"kind": "gloria", "scale": self.scale, "crop": self.crop, "mean": 0.5, "std": 0.5, "resize": "cv2-area"}


class ImageRows(torch.utils.data.Dataset):
    """Decode a row's image once and apply every model's preprocessing; errors are returned, not raised."""

    def __init__(self, paths: list[Path], preprocess: list[Callable]):
        self.paths, self.preprocess = paths, preprocess
        blank = Image.new("L", (8, 8))
        self.shapes = [p(blank).shape for p in preprocess]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            img = decode(self.paths[i])
            return i, [p(img) for p in self.preprocess], ""
        except EmbedkitError as exc:
            return i, [torch.zeros(s) for s in self.shapes], str(exc)


def collate(items):
    """Batch ImageRows items: (rows, one tensor per preprocessing, error strings)."""
    rows = [i for i, _, _ in items]
    tensors = [torch.stack([t[m] for _, t, _ in items]) for m in range(len(items[0][1]))]
    return rows, tensors, [e for _, _, e in items]
