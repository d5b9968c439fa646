"""The run spec: the settings every stage shares, each default in exactly one place.

Stages compose these frozen pieces — ``Where`` a run's files are read and written, ``Sweep`` what is trained
and chosen among on validation, ``Fairness`` which attributes are declared and how gaps are tested, ``Task``
what is predicted — and take their defaults from the instances below (``WHERE``, ``SWEEP``, ``FAIRNESS``,
``TASK``). The CLI options and the study schema are derived from these and from the registries (heads and
interventions, model families, prompt formats), never restated; ``tests/test_spec.py`` holds that.
"""

from __future__ import annotations

import dataclasses
import operator
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from annotated_types import Ge, Gt, Lt

from embedkit.errors import EmbedkitError
from embedkit.metrics.suite import N_BOOT, N_PERM

# The bounds of a setting, declared once on its field: the configs check them when made (``check_bounds``: the
# Python API, the CLI and a study alike) and the study schema, built from the same fields, enforces them too.
Count = Annotated[int, Ge(1)]                  # epochs, batch size, widths, k: at least one
Seed = Annotated[int, Ge(0)]
Replicates = Annotated[int, Ge(0)]             # bootstrap / permutation replicates (0: none)
Workers = Annotated[int, Ge(0)]                # loader processes (0: in the main process)
Rate = Annotated[float, Gt(0)]                 # learning rates, sizes in GB
Decay = Annotated[float, Ge(0)]                # weight decays
Fraction = Annotated[float, Ge(0), Lt(1)]      # dropout
_RULES = {Ge: ("ge", operator.ge, "at least"), Gt: ("gt", operator.gt, "greater than"), Lt: ("lt", operator.lt, "below")}


def check_bounds(config) -> None:
    """Refuse a dataclass config whose field lies outside its declared bounds, naming the option that sets it."""
    hints = typing.get_type_hints(type(config), include_extras=True)
    for f in dataclasses.fields(config):
        for value, rule in _broken(hints[f.name], getattr(config, f.name)):
            raise EmbedkitError(f"--{f.name.replace('_', '-')} {value!r}: must be {rule}")


def _broken(kind, value):
    """(value, rule) for each part of ``value`` (a number, or each item of a sequence) outside ``kind``'s bounds."""
    if value is None:
        return
    origin, args, many = typing.get_origin(kind), typing.get_args(kind), isinstance(value, (tuple, list))
    if origin is Annotated:
        for bound in kind.__metadata__:
            attr, holds, words = _RULES[type(bound)]
            try:
                if not holds(value, getattr(bound, attr)):
                    yield value, f"{words} {getattr(bound, attr)}"
            except TypeError:
                yield value, "a number"
    elif origin in (typing.Union, types.UnionType):
        for arg in args:
            if arg is not type(None) and (typing.get_origin(arg) in (tuple, list)) == many:
                yield from _broken(arg, value)
    elif origin in (tuple, list) and many:
        for item in value:
            yield from _broken(args[0], item)


def parse_seeds(text: str) -> tuple[int, ...]:
    """``0,1,2`` or ``0-4`` (inclusive) or a mix; duplicates removed, order kept."""
    items = [v.strip() for v in str(text).split(",") if v.strip()]
    if not items:
        raise EmbedkitError("--seeds needs at least one value")
    out: list[int] = []
    for item in items:
        lo, dash, hi = (v.strip() for v in item.partition("-"))
        if not (lo.isdigit() and (hi.isdigit() if dash else True)) or (dash and int(hi) < int(lo)):
            raise EmbedkitError(f"{item!r} is not a seed; use integers and ranges, e.g. 0,1,2 or 0-4")
        out += range(int(lo), int(hi) + 1) if dash else [int(lo)]
    return tuple(dict.fromkeys(out))


def as_seeds(seeds) -> tuple[int, ...]:
    """Seeds as the Python API takes them: ``3``, ``[0, 1]`` or the CLI's text ``'0-4'``."""
    if isinstance(seeds, str):
        return parse_seeds(seeds)
    return (seeds,) if isinstance(seeds, int) else tuple(seeds)


@dataclass(frozen=True)
class Where:
    """Where a run reads and writes: the manifest, its dataset name, the store and run folders."""

    manifest: Path | None = None
    dataset: str | None = None                 # None: the manifest's folder name
    cache_dir: Path = Path("cache")
    runs_dir: Path = Path("runs")
    report_dir: Path = Path("reports")

    def dataset_name(self) -> str:
        return self.dataset or Path(self.manifest).resolve().parent.name

    def method_dir(self, model: str, method: str) -> Path:
        """``<runs>/<dataset>/<model>/<method>``: every seed of a method (and a model's audit) lives here."""
        return Path(self.runs_dir) / self.dataset_name() / model / method

    def run_dir(self, model: str, method: str, seed: int) -> Path:
        """``<runs>/<dataset>/<model>/<method>/seed-<k>``: the one layout of run folders."""
        return self.method_dir(model, method) / f"seed-{seed}"


@dataclass(frozen=True)
class Sweep:
    """What is trained and chosen among on validation (the paper's recipe by default)."""

    seeds: tuple[Seed, ...] = (0,)
    epochs: Count = 150
    batch_size: Count = 64
    lrs: tuple[Rate, ...] | None = None        # None: the method's own default sweep
    weight_decays: tuple[Decay, ...] | None = None


@dataclass(frozen=True)
class Fairness:
    """Which sensitive attributes are declared and how their gaps are tested and acted on."""

    attributes: str | None = None              # None: attributes.DEFAULT (sex, age, sex*age)
    attribute: str | None = None               # what an intervention or a fairness-aware selection acts on; None: sex
    selection: str = "loss"                    # heads.selection.STRATEGIES
    n_boot: Replicates = N_BOOT
    n_perm: Replicates = N_PERM
    adjust: str = "bh"                         # the report's multiple-testing rule: bh | holm


@dataclass(frozen=True)
class Task:
    """What is predicted (``embedkit.tasks``): one class per image among C (the paper's ``multiclass``), one
    finding against the rest (``binary``, ``positive``), or several findings per image (``multilabel``,
    ``findings``; None: every finding the manifest lists); ``threshold``: the rule choosing each finding's
    threshold on validation (f1, youden or fpr:X)."""

    kind: str = "multiclass"
    findings: tuple[str, ...] | None = None
    positive: str | None = None
    threshold: str = "f1"


WHERE, SWEEP, FAIRNESS, TASK = Where(), Sweep(), Fairness(), Task()
PRECISIONS = ("fp32", "bf16", "fp16")       # compute precisions; fp32 gives the authors' numbers
TRAINING_PRECISIONS = ("fp32", "bf16")      # fine-tuning autocasts to bf16 at most
