"""The Python API for notebooks: thin, typed wrappers over the same library calls the CLI makes.

Importing embedkit loads none of torch, transformers or open_clip; each function imports what it needs when
called. Worked example: docs/api.md (run by the tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from embedkit.spec import FAIRNESS, SWEEP, TASK, WHERE, Count, Replicates, as_seeds, check_bounds

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd


def extract(manifest: str | Path, models: str | Iterable[str], *, cache_dir: str | Path = WHERE.cache_dir,
            weights: dict[str, str | Path] | None = None, batch_size: int = SWEEP.batch_size,
            device: str = "auto", precision: str = "fp32") -> list[Path]:
    """Run each frozen encoder once over the manifest's images into its store; returns the store files. ``models``:
    'clip', 'clip,biomedclip' (as on the CLI) or a list of names."""
    from embedkit.cache.extract import ExtractConfig, extract as run
    from embedkit.errors import EmbedkitError

    names = tuple(m.strip() for m in (models.split(",") if isinstance(models, str) else models) if m.strip())
    if not names:
        raise EmbedkitError("models: name at least one encoder, e.g. 'clip' or ['clip', 'biomedclip']")
    cfg = ExtractConfig(manifest=Path(manifest), models=names, cache_dir=Path(cache_dir),
                        weights={k: Path(v) for k, v in (weights or {}).items()}, batch_size=batch_size, device=device,
                        precision=precision)
    return [r.path for r in run(cfg)]


def probe(manifest: str | Path, model: str, *, head: str = "linear", seeds: int | str | Iterable[int] = SWEEP.seeds,
          cache_dir: str | Path = WHERE.cache_dir, runs_dir: str | Path = WHERE.runs_dir, dataset: str | None = None,
          epochs: int = SWEEP.epochs, attributes: str | None = FAIRNESS.attributes, mitigate: str | None = None,
          attribute: str | None = FAIRNESS.attribute, selection: str = FAIRNESS.selection, task: str = TASK.kind,
          findings: str | None = None, positive: str | None = None, threshold: str = TASK.threshold,
          solver: str = "adamw") -> list[Path]:
    """Train (or skip, when finished) a head on cached features for every seed; returns the run folders. ``task``:
    multiclass, binary (``positive``) or multilabel (``findings``, comma-separated; default every finding);
    ``seeds``: 3 (seed 3 alone), [0, 1] or the CLI's '0-4'; ``solver``: the linear probe's adamw (the paper's) or lbfgs (CLIP's protocol)."""
    from embedkit import tasks
    from embedkit.errors import EmbedkitError
    from embedkit.heads.runner import ExperimentConfig, run_experiment
    from embedkit.heads.trained import HeadConfig

    for what, value in (("model", model), ("head", head)):
        if "," in value:
            raise EmbedkitError(f"{what} {value!r}: probe takes one model and one head per call; call it once for each")
    cfg = ExperimentConfig(model=model, manifest=Path(manifest), method=head, cache_dir=Path(cache_dir),
                           runs_dir=Path(runs_dir), dataset=dataset, seeds=as_seeds(seeds), head=HeadConfig(epochs=epochs, solver=solver),
                           attributes=attributes, mitigate=mitigate, attribute=attribute, selection=selection,
                           task=tasks.parse(task, findings, positive, threshold))
    return [r.path for r in run_experiment(cfg)]


def evaluate(predictions: "str | Path | pd.DataFrame", *, attributes: str | None = FAIRNESS.attributes,
             split: str = "test", n_boot: int = FAIRNESS.n_boot, n_perm: int = FAIRNESS.n_perm, seed: int = 0,
             threshold: str = TASK.threshold, threads: int | None = None) -> dict:
    """Every metric of one run's ``predictions.csv`` (a file or a run folder, or a pandas DataFrame with its
    columns: your own model's outputs) with CIs, p-values and noise floors, as ``embedkit evaluate --json`` prints
    it; ``threads`` blocks of replicates at once (None: a core each where there are several)."""
    from embedkit.predictions import read_predictions
    from embedkit.runs import evaluate_predictions

    _Resampling(n_boot, threads, n_perm)
    return evaluate_predictions(read_predictions(predictions), attributes=attributes, split=split, n_boot=n_boot,
                                n_perm=n_perm, seed=seed, threshold=threshold, threads=threads)


def results(runs_dir: str | Path = WHERE.runs_dir, *, attributes: str | None = FAIRNESS.attributes,
            n_boot: int = FAIRNESS.n_boot, adjust: str = FAIRNESS.adjust, threads: int | None = None) -> "pd.DataFrame":
    """Every number of every finished run as one tidy DataFrame (``embedkit results``; columns:
    ``embedkit.report.results.COLUMNS``); ``threads`` blocks of each run's replicates at once (the same numbers;
    None: a core each where there are several)."""
    from embedkit.report.export import of_runs

    _Resampling(n_boot, threads)
    return of_runs(Path(runs_dir), n_boot=n_boot, attributes=attributes, adjust=adjust, threads=threads)


@dataclass(frozen=True)
class _Resampling:
    """The replicates and threads a call asked for, refused out of their bounds as the CLI's options are."""

    n_boot: Replicates
    threads: Count | None = None
    n_perm: Replicates | None = None

    def __post_init__(self):
        check_bounds(self)


@dataclass
class Store:
    """One embedding store, read and checked: the embeddings and each row's image key as numpy arrays."""

    path: Path
    model: str
    embeddings: "np.ndarray"         # (N, D)
    image_keys: "np.ndarray"         # (N,) SHA-256 of each image file's bytes
    classes: tuple[str, ...]
    attrs: dict


def open_store(path: str | Path) -> Store:
    """Read a store file (its checksums verified); join it to a manifest with ``embedkit.cache.join``."""
    from embedkit.cache import read_cache

    c = read_cache(path)
    return Store(Path(path), str(c.attrs.get("model")), c.embeddings, c.image_id, tuple(c.classes), dict(c.attrs))
