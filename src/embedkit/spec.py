"""The run spec: the settings every stage shares, each default in exactly one place.

Stages compose these frozen pieces — ``Where`` a run's files are read and written, ``Sweep`` what is trained
and chosen among on validation, ``Fairness`` which attributes are declared and how gaps are tested, ``Task``
what is predicted — and take their defaults from the instances below (``WHERE``, ``SWEEP``, ``FAIRNESS``,
``TASK``). The CLI options and the study schema are derived from these and from the registries (heads and
interventions, model families, prompt formats), never restated; ``tests/test_spec.py`` holds that.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from embedkit.metrics.suite import N_BOOT, N_PERM


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

    seeds: tuple[int, ...] = (0,)
    epochs: int = 150
    batch_size: int = 64
    lrs: tuple[float, ...] | None = None       # None: the method's own default sweep
    weight_decays: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Fairness:
    """Which sensitive attributes are declared and how their gaps are tested and acted on."""

    attributes: str | None = None              # None: attributes.DEFAULT (sex, age, sex*age)
    attribute: str | None = None               # what an intervention or a fairness-aware selection acts on; None: sex
    selection: str = "loss"                    # heads.selection.STRATEGIES
    n_boot: int = N_BOOT
    n_perm: int = N_PERM
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
