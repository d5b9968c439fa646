"""A small registry of model families: each adapter file registers its names here."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from embedkit.errors import EmbedkitError
from embedkit.models.base import Encoder


@dataclass(frozen=True)
class ModelSpec:
    """One registered model name.

    ``load(weights, tokenizer, tiny)`` builds the encoder from a local file (``weights=None``: the usual
    online source, or an error saying what to download; ``tiny``: the small architecture);
    ``tiny(seed)`` a seeded small variant;
    ``save(encoder, path)`` writes it in the family's published format.
    """

    name: str
    family: str
    embed_dim: int
    preprocessing: str
    weight_formats: str
    source: str
    load: Callable[[Path | None, Path | None, bool], Encoder]
    tiny: Callable[[int], Encoder]
    save: Callable[[Encoder, Path], Path]


_MODELS: dict[str, ModelSpec] = {}
FAMILIES = ("clip", "biomedclip", "medclip", "gloria", "vit_imagenet")  # adapter modules, one file each


def register(spec: ModelSpec) -> ModelSpec:
    _MODELS[spec.name] = spec
    return spec


def get(name: str) -> ModelSpec:
    """The spec for ``name`` (``<name>-tiny`` resolves to the same spec)."""
    _ensure_loaded()
    base = name.removesuffix("-tiny")
    if base not in _MODELS:
        raise EmbedkitError(f"unknown model {name!r}; choose from {', '.join(names())} (or <name>-tiny)")
    return _MODELS[base]


def names() -> list[str]:
    """Registered names in family order (FAMILIES), then registration order within a family."""
    _ensure_loaded()
    order = {f"embedkit.models.{f}": i for i, f in enumerate(FAMILIES)}
    return sorted(_MODELS, key=lambda n: order.get(_MODELS[n].load.__module__, len(order)))


def load_encoder(name: str, *, weights: str | Path | None = None, tokenizer: str | Path | None = None,
                 seed: int = 0) -> Encoder:
    """Build the encoder ``name``: ``-tiny`` names are seeded small variants unless ``weights`` is given."""
    spec, tiny = get(name), name.endswith("-tiny")
    if tiny and weights is None:
        return spec.tiny(seed)
    return spec.load(Path(weights) if weights else None, Path(tokenizer) if tokenizer else None, tiny)


def _ensure_loaded() -> None:
    """Import every adapter once (importing one family directly must not hide the others)."""
    if not all(f"embedkit.models.{f}" in sys.modules for f in FAMILIES):
        import importlib

        for family in FAMILIES:
            try:
                importlib.import_module(f"embedkit.models.{family}")
            except ModuleNotFoundError as exc:
                if exc.name != f"embedkit.models.{family}":
                    raise
