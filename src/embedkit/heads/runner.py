"""Run folders for the cache-path methods (``embedkit.heads.base``: zero-shot, linear, MLP, kNN, ...).

Each run writes ``<runs>/<dataset>/<model>/<method>/seed-<k>/{predictions.csv,run.json}`` through
``embedkit.runs``, which also answers whether a run is done; a finished run with the same identity is
skipped unless ``force``. Every selection (prompt format, lr/wd and epoch, k) uses validation only. A
post-processing intervention maps its base method's finished runs (running them first where missing).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from embedkit.cache import Cache
from embedkit.errors import EmbedkitError
from embedkit.heads import base, features
from embedkit.heads.knn import KS
from embedkit.heads.posthoc import PostProcessing
from embedkit.heads.trained import HeadConfig
from embedkit.manifest import read_manifest
from embedkit.prompts import FORMATS
from embedkit.predictions import PREDICTIONS, Predictions, attribute_columns, read_predictions
from embedkit.runs import check_one_kind, config_digest, finish_run, new_record, refresh_metrics, run_state
from embedkit.spec import FAIRNESS, SWEEP, TASK, WHERE, Count, Replicates, Seed, Task, Where, check_bounds


@dataclass(frozen=True)
class ExperimentConfig:
    """A cache-path experiment: which cache, which method, which seeds, where runs go."""

    model: str
    manifest: Path
    method: str                                  # a registered head: embedkit.heads.base.names()
    cache_dir: Path = WHERE.cache_dir
    cache: Path | None = None
    runs_dir: Path = WHERE.runs_dir
    dataset: str | None = None
    seeds: tuple[Seed, ...] = SWEEP.seeds
    head: HeadConfig = field(default_factory=HeadConfig)
    ks: tuple[Count, ...] = KS
    prompts: tuple[str, ...] = FORMATS
    force: bool = False
    threads: int | None = None         # torch threads to train (None: one); the statistics' blocks: resample.map_blocks
    n_boot: Replicates = FAIRNESS.n_boot
    attributes: str | None = FAIRNESS.attributes  # declared sensitive attributes (None: sex, age, sex*age)
    mitigate: str | None = None                  # a fairness intervention on ``method`` (embedkit.heads: reweight, ...)
    attribute: str | None = FAIRNESS.attribute   # the attribute it (and a fairness-aware selection) acts on; None: sex
    selection: str = FAIRNESS.selection          # embedkit.heads.selection.STRATEGIES
    strength: float | None = None                # the intervention's strength; None: its paper's default
    task: Task = TASK                            # what is predicted (embedkit.tasks): classes, or findings
    config_hash: str = ""                        # set by run_experiment: the identity's digest

    def __post_init__(self):
        check_bounds(self)

    @property
    def name(self) -> str:
        """The run folder's method part: ``linear``, or ``linear+reweight-sex`` for an intervention."""
        if not self.mitigate:
            return self.method
        from embedkit.attributes import ACTED_ON, parse

        return f"{self.method}+{self.mitigate}-{parse(self.attribute or ACTED_ON)[0].name}"

    def implementation(self) -> base.Method:
        return base.get(self.mitigate or self.method)

    def run_dir(self, seed: int) -> Path:
        return Where(self.manifest, self.dataset, runs_dir=self.runs_dir).run_dir(self.model, self.name, seed)

    def fingerprint(self) -> dict:
        """What identifies a run's results (paths excluded; the cache key stands for the data)."""
        task = {} if self.task == TASK else {"task": asdict(self.task)}     # the paper's task: identities as before
        return {"model": self.model, "method": self.method, "dataset": self.dataset, "n_boot": self.n_boot,
                **task, **self.implementation().settings(self)}


@dataclass
class RunResult:
    path: Path
    skipped: bool
    record: dict


def identity(cfg: ExperimentConfig, cache_key: str | None, manifest_digest: str, rows_digest: str | None) -> dict:
    """Everything that determines a cache-path run's result: its settings, the store (whose key covers
    the encoder, its weights and the precision), the manifest's rows (labels, splits) and the content
    of the images read."""
    return {"config": cfg.fingerprint(), "cache": cache_key, "manifest": manifest_digest, "images": rows_digest}


def seeds_of(cfg: ExperimentConfig) -> tuple[int, ...]:
    """A deterministic method (kNN, and post-processing on it) has one run, under the first seed."""
    return cfg.seeds if base.get(cfg.method).seeded else cfg.seeds[:1]


def run_experiment(cfg: ExperimentConfig) -> list[RunResult]:
    """Run (or skip, when finished) one method for every seed; returns one result per seed."""
    method = cfg.implementation()
    if cfg.mitigate and not method.needs_attribute:
        raise EmbedkitError(f"--mitigate {cfg.mitigate}: not an intervention; choose from "
                            f"{', '.join(n for n in base.names() if base.get(n).needs_attribute)}")
    read_manifest(cfg.manifest, attributes=cfg.attributes)  # a bad manifest is named before anything else
    _check_task(cfg)
    check_one_kind(cfg.runs_dir, cfg.task.kind)
    path = cfg.cache or features.find_cache(cfg.model, cfg.manifest, cfg.cache_dir)
    cache, parts = features.load(path, cfg.manifest, cfg.task)
    features.of_model(cache, cfg.model)
    ident = identity(cfg, cache.attrs.get("key"), cache.manifest_digest, cache.rows_digest)
    cfg = _with_hash(cfg, config_digest(ident))
    results = {}
    for s in seeds_of(cfg):
        state = run_state(cfg.run_dir(s), ident, manifest_digest=cache.manifest_digest, manifest_path=cfg.manifest)
        if state.done and not cfg.force:
            results[s] = RunResult(cfg.run_dir(s), True, refresh_metrics(cfg.run_dir(s), cfg.attributes, n_boot=cfg.n_boot,
                                                                         seed=s, threshold=cfg.task.threshold))
    todo = tuple(s for s in seeds_of(cfg) if s not in results)
    if todo:
        start = time.perf_counter()
        if isinstance(method, PostProcessing):
            fitted = list(method.post(cfg, cache, parts, _base_fits(cfg, cache, parts, todo)))
        else:
            with features.torch_threads(cfg.threads):
                fitted = list(method.fit(cfg, cache, parts, todo))
        seconds = (time.perf_counter() - start) / len(todo)
        for f in fitted:
            results[f.seed] = _write_run(cfg, f, cache, parts, ident, seconds)
    return [results[s] for s in seeds_of(cfg)]


def _base_fits(cfg: ExperimentConfig, cache: Cache, parts: dict, seeds: tuple[int, ...]) -> list[base.Fitted]:
    """A post-processing intervention's base: the finished runs of its ``--head`` with the same settings (run first
    where missing or stale; ``force`` redoes the intervention, not them), read back rather than refitted. Their
    probabilities are the refit's to the 7 digits predictions.csv keeps."""
    fits = []
    for run in run_experiment(replace(cfg, mitigate=None, seeds=seeds, force=False)):
        p = read_predictions(run.path / PREDICTIONS)
        proba = {}
        for s in ("val", "test"):
            rows = p.split == s
            if not np.array_equal(p.image_id[rows], cache.image_id[parts[s].rows]):
                raise EmbedkitError(f"{run.path / PREDICTIONS}: its {s} rows are not this store's; delete the run "
                                    "folder to refit it")
            proba[s] = p.proba[rows]
        fits.append(base.Fitted(run.record["seed"], proba, run.record["selection"]))
    return fits


BINARY_INTERVENTIONS = ("reweight", "resample", "groupdro")     # (group x label) cells of a binary label


def _check_task(cfg: ExperimentConfig) -> None:
    """Binary and multi-label tasks run on the heads that predict findings, without interventions (yet)."""
    from embedkit import tasks
    from embedkit.tasks import FINDING_METHODS

    tasks.check(cfg.task)
    if cfg.task.kind == "multiclass":
        return
    if cfg.mitigate and (cfg.task.kind != "binary" or cfg.mitigate not in BINARY_INTERVENTIONS):
        raise EmbedkitError(f"--mitigate {cfg.mitigate}: for --task {cfg.task.kind} use "
                            + (f"{', '.join(BINARY_INTERVENTIONS)} (they balance group x label cells; the others "
                               "act on class probabilities)" if cfg.task.kind == "binary" else
                               "none yet: the interventions balance or post-process one label per image, and a "
                               "multi-label image has several — run each finding as --task binary"))
    if cfg.method not in FINDING_METHODS:
        raise EmbedkitError(f"--head {cfg.method}: predicts classes only; for --task {cfg.task.kind} use "
                            f"{', '.join(FINDING_METHODS)}")


def _with_hash(cfg: ExperimentConfig, digest: str) -> ExperimentConfig:
    return replace(cfg, config_hash=digest)


def _write_run(cfg: ExperimentConfig, fitted: base.Fitted, cache: Cache, parts: dict, ident: dict,
               seconds: float) -> RunResult:
    val, test = parts["val"].rows, parts["test"].rows
    rows = np.concatenate([val, test])
    findings = cfg.task.kind != "multiclass"
    truth = np.concatenate([parts["val"].y.numpy(), parts["test"].y.numpy()]) if findings else None
    preds = Predictions(image_id=cache.image_id[rows], split=np.array(["val"] * len(val) + ["test"] * len(test)),
                        label=None if findings else cache.meta["label"][rows],
                        proba=np.concatenate([fitted.proba["val"], fitted.proba["test"]]),
                        classes=cache.classes, attributes={k: v[rows] for k, v in attribute_columns(cache.meta).items()},
                        patient_id=cache.meta["patient_id"][rows], truth=truth)
    record = new_record(method=cfg.name, model=cfg.model, seed=fitted.seed, config=cfg.fingerprint(),
                        config_hash=cfg.config_hash, identity=ident, manifest_digest=cache.manifest_digest,
                        manifest=cfg.manifest) | {
        "cache": {"path": str(cache.path), "key": cache.attrs.get("key")}, "versions": cache.attrs.get("versions"),
        "timings": {"seconds": seconds}, "selection": fitted.selection,
    }
    folder = cfg.run_dir(fitted.seed)
    return RunResult(folder, False, finish_run(folder, preds, record, attributes=cfg.attributes, n_boot=cfg.n_boot,
                                               seed=fitted.seed, threshold=cfg.task.threshold))
