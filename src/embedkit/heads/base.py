"""The head protocol and its registry: every cache-path method (zero-shot, linear, MLP, kNN, and the
fairness interventions) is one class in one module of this package, registered by name.

A method fits on the training split, makes every choice on validation only, and returns for each
seed the class probabilities of the validation and test rows with a record of what it chose.
Adding one is adding a module here with a ``@register``-ed subclass of ``Method``.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import ClassVar, Iterator

import numpy as np

from embedkit.errors import EmbedkitError


@dataclass
class Fitted:
    """One seed's result: probabilities per evaluated split and the selection made on validation."""

    seed: int
    proba: dict[str, np.ndarray]     # "val" and "test": (N, C)
    selection: dict


class Method:
    """A cache-path method. ``fit`` yields one ``Fitted`` per seed it was asked for."""

    name: ClassVar[str]
    rank: ClassVar[int] = 100         # order in listings and reports
    seeded: ClassVar[bool] = True     # False: deterministic, one run under the first seed
    needs_attribute: ClassVar[bool] = False   # True: a fairness intervention (--mitigate) on --head
    on_heads: ClassVar[tuple[str, ...] | None] = None   # an intervention: the heads it works on (None: any)

    @classmethod
    def options(cls) -> dict[str, tuple[object, object]]:
        """The settings of this method a study's ``[methods.<name>]`` takes beyond the shared ones (seeds,
        interventions, selection): name -> (type, default). The study schema is built from these."""
        return {}

    def settings(self, cfg) -> dict:
        """The part of an ``ExperimentConfig`` that determines this method's results."""
        return {}

    def fit(self, cfg, cache, parts: dict, seeds: tuple[int, ...]) -> Iterator[Fitted]:
        raise NotImplementedError


_REGISTRY: dict[str, type[Method]] = {}
_INTERNAL = {"base", "features", "runner", "trained", "selection", "mitigation", "posthoc", "groups", "lbfgs", "checkpoint"}


def register(cls: type[Method]) -> type[Method]:
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"head {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    """Import every method module of this package once (each registers its class)."""
    import embedkit.heads as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _INTERNAL:
            importlib.import_module(f"embedkit.heads.{info.name}")


def names() -> tuple[str, ...]:
    """Every registered method, heads first, then the interventions."""
    _discover()
    return tuple(sorted(_REGISTRY, key=lambda n: (_REGISTRY[n].rank, n)))


def heads() -> tuple[str, ...]:
    return tuple(n for n in names() if not _REGISTRY[n].needs_attribute)


def interventions() -> tuple[str, ...]:
    return tuple(n for n in names() if _REGISTRY[n].needs_attribute)


def applies(intervention: str, head: str) -> bool:
    """Whether ``intervention`` runs on ``head`` (in-training ones train only some heads)."""
    on = get(intervention).on_heads
    return on is None or head in on


def get(name: str) -> Method:
    _discover()
    if name not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise EmbedkitError(f"unknown method {name!r}{hint}; choose from {', '.join(names())}")
    return _REGISTRY[name]()
