"""Encoders: one adapter file per family behind a small registry.

``load_encoder("biomedclip", weights=...)`` gives an ``Encoder`` whose preprocessing, image
tower and text encoder follow the authors' code; ``<name>-tiny`` are seeded small variants.
"""

from embedkit.models.base import Encoder, LoraTargets
from embedkit.models.registry import get, load_encoder, names

__all__ = ["Encoder", "LoraTargets", "get", "load_encoder", "names"]
