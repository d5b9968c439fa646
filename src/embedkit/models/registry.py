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
    A ``generic`` adapter (open_clip, hf-clip, hf-vision) loads whatever checkpoint it is given; the
    user names the model (``define``), and that name keys its store and run folders.
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
    generic: bool = False
    user: bool = False           # a name the user gave a generic adapter's checkpoint (``define``)


_MODELS: dict[str, ModelSpec] = {}
FAMILIES = ("clip", "biomedclip", "medclip", "gloria", "vit_imagenet",     # adapter modules, one file each
            "open_clip_any", "hf_clip", "hf_vision")                          # the generic adapters


def register(spec: ModelSpec) -> ModelSpec:
    _MODELS[spec.name] = spec
    return spec


def get(name: str) -> ModelSpec:
    """The spec for ``name`` (``<name>-tiny`` resolves to the same spec)."""
    _ensure_loaded()
    base = name.removesuffix("-tiny")
    if base not in _MODELS:
        raise EmbedkitError(f"unknown model {name!r}; choose from {', '.join(names())} (or <name>-tiny); for a "
                            f"checkpoint of your own: --model {'|'.join(generic_names())} --weights W --name {name}")
    return _MODELS[base]


def define(adapter: str, name: str, *, arch: str | None = None) -> ModelSpec:
    """Register ``name`` as a model loaded by the generic ``adapter`` (with ``arch`` where it needs one)."""
    import functools
    from dataclasses import replace

    spec = get(adapter)
    if not spec.generic:
        raise EmbedkitError(f"{adapter!r} is not a generic adapter; --name and --arch go with {', '.join(generic_names())}")
    existing = _MODELS.get(name.removesuffix("-tiny"))
    if existing is not None and not existing.user:
        raise EmbedkitError(f"--name {name!r} is a built-in model; choose another name")
    defined = replace(spec, name=name, load=functools.partial(spec.load, arch=arch, name=name), generic=False, user=True)
    _MODELS[name] = defined
    return defined


def name_generic(models: tuple[str, ...], weights: dict, *, name: str | None = None,
                 arch: str | None = None) -> tuple[tuple[str, ...], dict]:
    """Each generic adapter in ``models`` (not its -tiny) renamed to the user's ``name`` (default: from its
    weights) and defined under it; ``weights`` re-keyed to match. ``name``/``arch`` need exactly one."""
    generic = [m for m in models if get(m).generic and not m.endswith("-tiny")]
    if (name or arch) and len(generic) != 1:
        raise EmbedkitError(f"--name/--arch go with exactly one of {', '.join(generic_names())} in --model")
    out_models, out_weights = [], dict(weights)
    for m in models:
        if m not in generic:
            out_models.append(m)
            continue
        if m not in weights:
            raise EmbedkitError(f"--model {m}: give its checkpoint with --weights (see `embedkit models`)")
        user = name or default_name(weights[m])
        define(m, user, arch=arch)
        out_weights[user] = out_weights.pop(m)
        out_models.append(user)
    return tuple(out_models), out_weights


def default_name(weights: str | Path) -> str:
    """A readable model name from its weights: the folder's or file's name, lower case, safe characters."""
    import re

    text = str(weights)
    base = text.split("/")[-1] if text.startswith("hf-hub:") else (Path(text).name if Path(text).is_dir() else Path(text).stem)
    return re.sub(r"[^a-z0-9._-]+", "-", base.lower()).strip("-") or "model"


def generic_names() -> list[str]:
    _ensure_loaded()
    return [n for n, s in _MODELS.items() if s.generic]


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
