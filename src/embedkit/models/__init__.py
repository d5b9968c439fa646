"""Encoders: one adapter file per family behind a small registry.

``load_encoder("biomedclip", weights=...)`` gives an ``Encoder`` whose preprocessing, image
tower and text encoder follow the authors' code; ``<name>-tiny`` are seeded small variants.
The names below load on first use: importing the package (e.g. for ``models.catalog``) loads no torch.
"""

from __future__ import annotations

_FROM = {"Encoder": "base", "LoraTargets": "base", "get": "registry", "load_encoder": "registry", "names": "registry"}
__all__ = list(_FROM)


def __getattr__(name: str):
    if name not in _FROM:
        raise AttributeError(f"module 'embedkit.models' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"embedkit.models.{_FROM[name]}"), name)
