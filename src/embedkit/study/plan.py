"""The plan of a study: every step in order — data, extraction, cache-path experiments, audit, fine-tuning,
report — each with whether it is done, why it is stale and a rough time. It orchestrates library calls;
it computes nothing itself."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from embedkit.errors import CacheNotFound, EmbedkitError
from embedkit.study.config import Study
from embedkit.study.data import data_step
from embedkit.study.steps import Step, combine

log = logging.getLogger("embedkit.study")


def _cache_of(study: Study, model: str) -> tuple[Path | None, str]:
    """The cache this study's settings for ``model`` would use (weights content, precision, manifest
    rows), or None and why not."""
    if not study.manifest.is_file():
        return None, ""
    from embedkit.heads.features import find_cache
    from embedkit.models.checkpoints import file_digest

    weights = study.resolve(study.models[model].weights)
    expect = {"precision": study.config.extract.precision}
    if weights is not None and weights.exists():
        expect["weights_digest"] = file_digest(weights)
    try:
        path = find_cache(model, study.manifest, study.paths["cache_dir"], expect=expect)
    except CacheNotFound as exc:
        return None, f"{', '.join(exc.differ)} changed" if exc.differ else ""
    from embedkit.cache.join import missing_images
    from embedkit.manifest import read_manifest

    missing = missing_images(path, read_manifest(study.manifest))  # every round has the same images
    return (path, "") if not missing else (None, f"{missing} image(s) not in the store yet")




def _extract_step(study: Study) -> Step:
    from embedkit.cache.extract import ExtractConfig, extract

    models = _cached_models(study)
    opts, own = study.config.extract.model_dump(), study.models

    def cfg(names):
        return ExtractConfig(manifest=study.manifest, models=names, cache_dir=study.paths["cache_dir"],
                             weights={m: study.resolve(own[m].weights) for m in names if own[m].weights},
                             tokenizers={m: study.resolve(own[m].tokenizer) for m in names if own[m].tokenizer},
                             **opts)

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
    return Step("extract", ", ".join(models), status, study.n_images() * per_image, run, "; ".join(reasons))


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
            opts = study.options(method)
            head = {k: v for k, v in opts.items() if k in HeadConfig.__dataclass_fields__}
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
                                       seeds=study.seeds(method), head=HeadConfig(**head),
                                       prompts=("clip", "gloria", "cxrclip") if prompts == "all" else tuple(prompts),
                                       attributes=study.attributes, mitigate=mitigate, task=study.task(), **extra)
                states = [run_state(cfg.run_dir(s), identity(cfg, cache_key_of(cache), digest, rows)) for s in seeds_of(cfg)]
                status, reason = combine(states)
                steps.append(Step("experiments", f"{model} / {cfg.name}" + (f" / {dataset}" if study.config.folds else ""),
                                  status, 2.0 + (10.0 if method == "mlp" else 0.0), lambda cfg=cfg: run_experiment(cfg), reason))
    return steps


def _cache_methods() -> tuple[str, ...]:
    """The registered cache-path methods (zero-shot and the heads; interventions run on a head)."""
    from embedkit.heads import base

    return base.heads()


def _finetune_steps(study: Study) -> list[Step]:
    from embedkit.finetune import modes
    from embedkit.finetune.train import FinetuneConfig, finetune
    from embedkit.runs import RunState, run_state

    steps = []
    for model, spec in study.models.items():
        for (dataset, manifest), method in ((r, k) for k in modes.names() for r in study.rounds):
            if not study.runs(model, method):
                continue
            opts = {k: v for k, v in study.options(method).items() if k in FinetuneConfig.__dataclass_fields__}
            cfg = FinetuneConfig(model=model, manifest=manifest, mode=method, weights=study.resolve(spec.weights),
                                 arch=spec.arch, runs_dir=study.paths["runs_dir"], dataset=dataset,
                                 seeds=study.seeds(method), attributes=study.attributes, task=study.task(), **opts)
            epochs = cfg.epochs * len(cfg.learning_rates()) * len(cfg.seeds)
            per_image = 0.002 if model.endswith("-tiny") else 0.75
            ready = manifest.is_file() and (cfg.weights is None or cfg.weights.exists())
            states = [run_state(cfg.run_dir(s), cfg.identity()) for s in cfg.seeds] if ready else [RunState("to run")]
            status, reason = combine(states)
            steps.append(Step("finetune", f"{model} / {method}" + (f" / {dataset}" if study.config.folds else ""),
                              status, epochs * study.n_images() * per_image, lambda cfg=cfg: finetune(cfg), reason))
    return steps


def _cached_models(study: Study) -> tuple[str, ...]:
    """Models whose embeddings the study reads from a store (cache-path methods or the audit)."""
    audit = study.config.audit is not None
    return tuple(m for m in study.models if any(study.runs(m, k) for k in _cache_methods())
                 or (audit and not study.models[m].methods))


def _audit_steps(study: Study) -> list[Step]:
    """One audit per model on the study's manifest: attribute probes, duplicates, embedding maps."""
    if study.config.audit is None:
        return []
    from embedkit.audit import AuditConfig, run_audit

    opts = study.config.audit.model_dump()
    only = opts.pop("models")
    steps = []
    for model in (m for m in _cached_models(study) if only is None or m in only):
        cfg = AuditConfig(model=model, manifest=study.manifest, cache_dir=study.paths["cache_dir"],
                          runs_dir=study.paths["runs_dir"], dataset=study.config.dataset,
                          attributes=study.attributes, **opts)
        done = (cfg.out_dir() / "audit.json").is_file() and _cache_of(study, model)[0] is not None and \
            json.loads((cfg.out_dir() / "audit.json").read_text()).get("settings") == cfg.settings()
        steps.append(Step("audit", model, "done" if done else "to run", 5.0, lambda cfg=cfg: run_audit(cfg)))
    return steps


def plan(study: Study) -> list[Step]:
    """Every step in order, with whether it is already done and a rough time."""
    from embedkit.report import build_report

    study.check_declared()
    steps = [data_step(study), _extract_step(study), *_experiment_steps(study), *_audit_steps(study),
             *_finetune_steps(study)]
    steps.append(Step("report", str(study.paths["report_dir"]), "to run", 10.0,
                      lambda: build_report(study.paths["runs_dir"], study.paths["report_dir"], attributes=study.attributes,
                                           **study.config.report.model_dump())))
    return steps
