"""`embedkit study`: the whole study from one TOML file — data, extraction, cache-path experiments,
fine-tuning, report — skipping what is already done, so a rerun after a crash (or after adding a
model) does only the missing work. It orchestrates library calls; it computes nothing itself.

A failed step is logged (``<runs>/study.log``) and reported at the end; the other steps still run.
"""

from __future__ import annotations

import json
import logging
import re
import time
import tomllib
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from embedkit.errors import EmbedkitError

HEAVY_METHODS = ("lora", "full")
log = logging.getLogger("embedkit.study")


@dataclass
class Step:
    stage: str                       # data | extract | experiments | finetune | report
    name: str
    status: str                      # done | to run | stale
    estimate_s: float
    run: Callable[[], object]
    reason: str = ""                 # why a step is stale ("epochs 150 → 100", "weights changed")
    error: str | None = None
    seconds: float = 0.0

    @property
    def done(self) -> bool:
        return self.status == "done"


def _combine(states) -> tuple[str, str]:
    """One step's status from its runs' RunStates: done only when all are."""
    states = list(states)
    stale = [s for s in states if s.status == "stale"]
    if stale:
        return "stale", stale[0].reason
    return ("done", "") if all(s.done for s in states) else ("to run", "")


@dataclass
class Study:
    path: Path
    config: dict
    root: Path

    def resolve(self, value: str | None) -> Path | None:
        """Paths in the study file are relative to the file's folder."""
        if value in (None, ""):
            return None
        p = Path(str(value).format(**self.config.get("vars", {})))
        return (p if p.is_absolute() else self.root / p).resolve()

    @property
    def paths(self) -> dict[str, Path]:
        p = self.config.get("paths", {})
        return {k: self.resolve(p.get(k, d)) for k, d in
                (("cache_dir", "cache"), ("runs_dir", "runs"), ("report_dir", "reports"))}

    @property
    def manifest(self) -> Path:
        data = self.config["data"]
        out = self.resolve(data["out"] if data["kind"] != "manifest" else data["path"])
        return out / "manifest.csv" if data["kind"] == "phantom" else out

    @property
    def rounds(self) -> list[tuple[str | None, Path]]:
        """(dataset name, manifest) of every round: the manifest itself, or with ``folds = K`` the K
        cross-validation rounds (``<dataset>-fold<i>``; the report pools their test predictions)."""
        k = self.config.get("folds")
        if not k:
            return [(self.config.get("dataset"), self.manifest)]
        base = self.config.get("dataset") or self.manifest.parent.name
        return [(f"{base}-fold{i}", self.manifest.parent / "folds" / f"fold-{i}.csv") for i in range(k)]

    @property
    def models(self) -> dict[str, dict]:
        return self.config.get("models", {})

    @property
    def attributes(self) -> str | None:
        """The declared sensitive attributes as one declaration ('sex,age,site'); None: the default."""
        declared = self.config.get("attributes")
        return ",".join(declared) if declared else None

    @property
    def methods(self) -> dict[str, dict]:
        return self.config.get("methods", {})

    def runs(self, model: str, method: str) -> bool:
        """Whether ``model`` takes part in ``method``: listed in [methods] and, when the model names
        its own ``methods`` (e.g. vit-imagenet only for full fine-tuning), among those."""
        return method in self.methods and method in self.models[model].get("methods", self.methods)


def _set(config: dict, dotted: str, value: str) -> None:
    *parents, leaf = dotted.split(".")
    node = config
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def load_study(path: str | Path, overrides: list[str] = ()) -> Study:
    """Read a study TOML; ``overrides`` are ``dotted.key=value`` strings (e.g. vars.weights=/w)."""
    path = Path(path)
    if not path.is_file():
        raise EmbedkitError(f"{path}: study file not found")
    try:
        config = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise EmbedkitError(f"{path}: not valid TOML ({exc})") from None
    for item in overrides:
        if "=" not in item:
            raise EmbedkitError(f"--set {item!r}: expected KEY=VALUE, e.g. vars.weights=/data/weights")
        _set(config, *item.split("=", 1))
    from embedkit.study_schema import validate

    study = Study(path, validate(config, path), path.parent.resolve())
    _define_own_models(study)
    return study


def _define_own_models(study: Study) -> None:
    """Register each ``[models.NAME]`` with a ``family`` (open_clip, hf-clip, hf-vision) under its name."""
    from embedkit.models.registry import define

    for name, spec in study.models.items():
        if spec.get("family"):
            define(spec["family"], name, arch=spec.get("arch"))


def _seeds(study: Study, method: str) -> tuple[int, ...]:
    return tuple(study.methods[method].get("seeds", study.config.get("seeds", [0])))


def _data_step(study: "Study") -> Step:
    from embedkit.study_data import data_step

    return data_step(study)


def _cache_of(study: Study, model: str) -> tuple[Path | None, str]:
    """The cache this study's settings for ``model`` would use (weights content, precision, manifest
    rows), or None and why not."""
    if not study.manifest.is_file():
        return None, ""
    from embedkit.heads.features import find_cache
    from embedkit.models.checkpoints import file_digest

    weights = study.resolve(study.models[model].get("weights"))
    expect = {"precision": study.config.get("extract", {}).get("precision", "fp32")}
    if weights is not None and weights.exists():
        expect["weights_digest"] = file_digest(weights)
    try:
        path = find_cache(model, study.manifest, study.paths["cache_dir"], expect=expect)
    except EmbedkitError as exc:
        differ = re.search(r"differ in ([^;]+)", str(exc))
        return None, f"{differ.group(1)} changed" if differ else ""
    from embedkit.cache.join import missing_images
    from embedkit.manifest import read_manifest

    missing = missing_images(path, read_manifest(study.manifest))  # every round has the same images
    return (path, "") if not missing else (None, f"{missing} image(s) not in the store yet")


def _n_images(study: Study) -> int:
    data = study.config["data"]
    return 24 * int(data.get("per_group", 50)) if data["kind"] != "manifest" else 1200


def _extract_step(study: Study) -> Step:
    from embedkit.cache.extract import ExtractConfig, extract

    models = _cached_models(study)
    opts = study.config.get("extract", {})

    def cfg(names):
        return ExtractConfig(manifest=study.manifest, models=names, cache_dir=study.paths["cache_dir"],
                             weights={m: study.resolve(study.models[m].get("weights")) for m in names if study.models[m].get("weights")},
                             tokenizers={m: study.resolve(study.models[m].get("tokenizer")) for m in names if study.models[m].get("tokenizer")},
                             batch_size=int(opts.get("batch_size", 64)), workers=opts.get("workers"),
                             device=opts.get("device", "auto"), precision=opts.get("precision", "fp32"))

    def run():
        try:  # one pass decodes each image once for every model
            return extract(cfg(models))
        except EmbedkitError as exc:  # isolate the failing model; the others still get their cache
            log.warning("joint extraction failed (%s); extracting model by model", exc)
            failures = []
            for m in models:
                try:
                    extract(cfg((m,)))
                except EmbedkitError as e:
                    failures.append(f"{m}: {e}")
            if failures:
                raise EmbedkitError("; ".join(failures))

    found = {m: _cache_of(study, m) for m in models}
    reasons = [f"{m}: {why}" for m, (path, why) in found.items() if path is None and why]
    status = "done" if all(p for p, _ in found.values()) else "stale" if reasons else "to run"
    per_image = sum(0.002 if m.endswith("-tiny") else 0.25 for m in models)
    return Step("extract", ", ".join(models), status, _n_images(study) * per_image, run, "; ".join(reasons))


def _experiment_steps(study: Study) -> list[Step]:
    from embedkit.cache import cache_key_of
    from embedkit.cache.join import manifest_rows_digest
    from embedkit.heads.runner import ExperimentConfig, identity, run_experiment, seeds_of
    from embedkit.heads.trained import HeadConfig
    from embedkit.manifest import read_manifest
    from embedkit.runs import run_state

    steps, caches, data = [], {}, {}
    for model in study.models:
        for (dataset, manifest), method in ((r, k) for k in _cache_methods() for r in study.rounds):
            if not study.runs(model, method):
                continue
            opts = dict(study.methods[method])
            opts.pop("seeds", None)
            head = {k: (tuple(v) if isinstance(v, list) else v) for k, v in opts.items()
                    if k in HeadConfig.__dataclass_fields__}
            prompts = opts.get("prompts", "all")
            extra = {"ks": tuple(opts["ks"])} if opts.get("ks") else {}
            extra |= {k: opts[k] for k in ("attribute", "selection", "strength") if opts.get(k) is not None}
            cache = caches.setdefault(model, _cache_of(study, model)[0])
            if (cache, manifest) not in data:  # once per store and round, not per method
                m = read_manifest(manifest) if manifest.is_file() else None
                data[(cache, manifest)] = (m.digest() if m else "", manifest_rows_digest(cache, m) if cache and m else None)
            digest, rows = data[(cache, manifest)]
            for mitigate in (None, *opts.get("mitigate", ())):   # ERM, then each intervention on this head
                cfg = ExperimentConfig(model=model, manifest=manifest, method=method, cache_dir=study.paths["cache_dir"],
                                       runs_dir=study.paths["runs_dir"], dataset=dataset,
                                       seeds=_seeds(study, method), head=HeadConfig(**head),
                                       prompts=("clip", "gloria", "cxrclip") if prompts == "all" else tuple(prompts),
                                       attributes=study.attributes, mitigate=mitigate, **extra)
                states = [run_state(cfg.run_dir(s), identity(cfg, cache_key_of(cache), digest, rows)) for s in seeds_of(cfg)]
                status, reason = _combine(states)
                steps.append(Step("experiments", f"{model} / {cfg.name}" + (f" / {dataset}" if study.config.get("folds") else ""),
                                  status, 2.0 + (10.0 if method == "mlp" else 0.0), lambda cfg=cfg: run_experiment(cfg), reason))
    return steps


def _cache_methods() -> tuple[str, ...]:
    """The registered cache-path methods (zero-shot and the heads; interventions run on a head)."""
    from embedkit.heads import base

    return base.heads()


def _finetune_steps(study: Study) -> list[Step]:
    from embedkit.finetune.train import FinetuneConfig, finetune
    from embedkit.runs import RunState, run_state

    steps = []
    for model, spec in study.models.items():
        for (dataset, manifest), method in ((r, k) for k in HEAVY_METHODS for r in study.rounds):
            if not study.runs(model, method):
                continue
            opts = {k: (tuple(v) if isinstance(v, list) else v) for k, v in study.methods[method].items()
                    if k in FinetuneConfig.__dataclass_fields__ and k not in ("seeds",)}
            cfg = FinetuneConfig(model=model, manifest=manifest, mode=method, weights=study.resolve(spec.get("weights")),
                                 arch=spec.get("arch"),
                                 runs_dir=study.paths["runs_dir"], dataset=dataset,
                                 seeds=_seeds(study, method), attributes=study.attributes, **opts)
            epochs = cfg.epochs * len(cfg.learning_rates()) * len(cfg.seeds)
            per_image = 0.002 if model.endswith("-tiny") else 0.75
            ready = manifest.is_file() and (cfg.weights is None or cfg.weights.exists())
            states = [run_state(cfg.run_dir(s), cfg.identity()) for s in cfg.seeds] if ready else [RunState("to run")]
            status, reason = _combine(states)
            steps.append(Step("finetune", f"{model} / {method}" + (f" / {dataset}" if study.config.get("folds") else ""),
                              status, epochs * _n_images(study) * per_image, lambda cfg=cfg: finetune(cfg), reason))
    return steps


def _cached_models(study: Study) -> tuple[str, ...]:
    """Models whose embeddings the study reads from a store (cache-path methods or the audit)."""
    audit = study.config.get("audit") is not None
    return tuple(m for m in study.models if any(study.runs(m, k) for k in _cache_methods())
                 or (audit and not study.models[m].get("methods")))


def _audit_steps(study: Study) -> list[Step]:
    """One audit per model on the study's manifest: attribute probes, duplicates, embedding maps."""
    if study.config.get("audit") is None:
        return []
    from embedkit.audit import AuditConfig, run_audit

    opts = study.config["audit"]
    steps = []
    for model in _cached_models(study):
        cfg = AuditConfig(model=model, manifest=study.manifest, cache_dir=study.paths["cache_dir"],
                          runs_dir=study.paths["runs_dir"], dataset=study.config.get("dataset"),
                          attributes=study.attributes,
                          n_boot=int(opts.get("n_boot", 1000)), n_perm=int(opts.get("n_perm", 1000)),
                          threshold=opts.get("threshold"), projection=opts.get("projection", "pca"))
        done = (cfg.out_dir() / "audit.json").is_file() and _cache_of(study, model)[0] is not None and \
            json.loads((cfg.out_dir() / "audit.json").read_text()).get("settings") == _audit_settings(cfg)
        steps.append(Step("audit", model, "done" if done else "to run", 5.0, lambda cfg=cfg: run_audit(cfg)))
    return steps


def _audit_settings(cfg) -> dict:
    from embedkit.attributes import parse

    return {"attributes": [a.name for a in parse(cfg.attributes)], "n_boot": cfg.n_boot, "n_perm": cfg.n_perm, "threshold": cfg.threshold,
            "projection": cfg.projection}


def plan(study: Study) -> list[Step]:
    """Every step in order, with whether it is already done and a rough time."""
    from embedkit.report import build_report

    steps = [_data_step(study), _extract_step(study), *_experiment_steps(study), *_audit_steps(study),
             *_finetune_steps(study)]
    steps.append(Step("report", str(study.paths["report_dir"]), "to run", 10.0,
                      lambda: build_report(study.paths["runs_dir"], study.paths["report_dir"],
                                           n_boot=int(study.config.get("report", {}).get("n_boot", 1000)),
                                           attributes=study.attributes,
                                           adjust=study.config.get("report", {}).get("adjust", "bh"))))
    return steps


def run_study(study: Study, *, on_step: Callable[[Step, str], None] | None = None) -> list[Step]:
    """Run every step that is not done; returns the steps (``error`` set on the failed ones)."""
    runs = study.paths["runs_dir"]
    runs.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(runs / "study.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        steps = []
        for stage in ("data", "extract", "rest"):
            # later stages are planned once the manifest and caches exist
            current = plan(study)
            todo = [s for s in current if (s.stage == stage if stage != "rest" else s.stage not in ("data", "extract"))]
            for step in todo:
                steps.append(step)
                if step.done:
                    log.info("skip (done) %s: %s", step.stage, step.name)
                    if on_step:
                        on_step(step, "skipped")
                    continue
                log.info("start %s: %s", step.stage, step.name)
                if on_step:
                    on_step(step, "started")
                t0 = time.perf_counter()
                try:
                    step.run()
                    status = "finished"
                except Exception as exc:  # recorded, reported at the end; the other steps go on
                    step.error = f"{type(exc).__name__}: {exc}"
                    log.error("failed %s: %s\n%s", step.stage, step.name, traceback.format_exc())
                    status = "failed"
                    if stage in ("data",):
                        return steps
                step.seconds = time.perf_counter() - t0
                log.info("%s %s: %s (%.1f s)", status, step.stage, step.name, step.seconds)
                if on_step:
                    on_step(step, status)
        return steps
    finally:
        log.removeHandler(handler)
        handler.close()
