"""Run folders for the cache-path experiments: zero-shot and the linear, MLP and kNN heads.

Each run writes ``<runs>/<dataset>/<model>/<method>/seed-<k>/{predictions.csv,run.json}``;
``run.json`` is written last, so its presence (with the same configuration hash) marks a finished
run that a rerun skips unless ``force``. Every selection (prompt format, lr/wd and epoch, k) uses
the validation split only.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from embedkit.cache import Cache
from embedkit.errors import EmbedkitError
from embedkit.heads import features, zeroshot
from embedkit.heads.knn import KS, fit_knn
from embedkit.heads.trained import HeadConfig, train_heads
from embedkit.manifest import read_manifest
from embedkit.prompts import FORMATS, SAMPLED
from embedkit.runs import Predictions, config_digest, finish_run, read_record, run_state

ZEROSHOT_REPEATS = 10  # sampled prompt formats are run with 10 seeds, as the paper did


@dataclass(frozen=True)
class ExperimentConfig:
    """A cache-path experiment: which cache, which method, which seeds, where runs go."""

    model: str
    manifest: Path
    method: str                                  # zeroshot | linear | mlp | knn
    cache_dir: Path = Path("cache")
    cache: Path | None = None
    runs_dir: Path = Path("runs")
    dataset: str | None = None
    seeds: tuple[int, ...] = (0,)
    head: HeadConfig = field(default_factory=HeadConfig)
    ks: tuple[int, ...] = KS
    prompts: tuple[str, ...] = FORMATS
    force: bool = False
    threads: int = 1
    n_boot: int = 1000

    def run_dir(self, seed: int) -> Path:
        return self.runs_dir / (self.dataset or self.manifest.resolve().parent.name) / self.model / self.method / f"seed-{seed}"

    def fingerprint(self) -> dict:
        """What identifies a run's results (paths excluded; the cache key stands for the data)."""
        d = asdict(self)
        for k in ("cache_dir", "cache", "runs_dir", "force", "threads", "manifest", "seeds"):
            d.pop(k)
        if self.method != "zeroshot":
            d.pop("prompts")
        if self.method in ("linear", "mlp"):
            d["head"] = asdict(self.head.resolved(self.method))
        else:
            d.pop("head")
        if self.method != "knn":
            d.pop("ks")
        return d


@dataclass
class RunResult:
    path: Path
    skipped: bool
    record: dict


def _predictions(cache: Cache, rows: np.ndarray, proba: np.ndarray, split: np.ndarray) -> Predictions:
    return Predictions(image_id=cache.image_id[rows], split=split, label=cache.meta["label"][rows],
                       sex=cache.meta["sex"][rows], age=cache.meta["age"][rows], proba=proba, classes=cache.classes)


def identity(cfg: ExperimentConfig, cache_key: str | None, manifest_digest: str, rows_digest: str | None) -> dict:
    """Everything that determines a cache-path run's result: its settings, the store (whose key covers
    the encoder, its weights and the precision), the manifest's rows (labels, splits) and the content
    of the images read."""
    return {"config": cfg.fingerprint(), "cache": cache_key, "manifest": manifest_digest, "images": rows_digest}


def _write_run(cfg: ExperimentConfig, seed: int, cache: Cache, parts: dict, proba: dict, selection: dict,
               seconds: float, config_hash: str) -> RunResult:
    folder = cfg.run_dir(seed)
    rows = np.concatenate([parts["val"].rows, parts["test"].rows])
    split = np.array(["val"] * len(parts["val"].rows) + ["test"] * len(parts["test"].rows))
    preds = _predictions(cache, rows, np.concatenate([proba["val"], proba["test"]]), split)
    record = {
        "method": cfg.method, "model": cfg.model, "seed": seed, "config": cfg.fingerprint(), "config_hash": config_hash,
        "identity": identity(cfg, cache.attrs.get("key"), cache.manifest_digest, cache.rows_digest), "manifest_digest": cache.manifest_digest,
        "manifest": str(cfg.manifest.resolve()),
        "cache": {"path": str(cache.path), "key": cache.attrs.get("key")}, "versions": cache.attrs.get("versions"),
        "timings": {"seconds": seconds}, "selection": selection,
    }
    return RunResult(folder, False, finish_run(folder, preds, record, n_boot=cfg.n_boot, seed=seed))


def _done(cfg: ExperimentConfig, seed: int, cache: Cache) -> dict | None:
    state = run_state(cfg.run_dir(seed), identity(cfg, cache.attrs.get("key"), cache.manifest_digest, cache.rows_digest),
                      manifest_digest=cache.manifest_digest)
    return read_record(cfg.run_dir(seed)) if state.done and not cfg.force else None


def run_experiment(cfg: ExperimentConfig) -> list[RunResult]:
    """Run (or skip, when finished) one method for every seed; returns one result per seed."""
    if cfg.method not in ("zeroshot", "linear", "mlp", "knn"):
        raise EmbedkitError(f"unknown method {cfg.method!r}; choose zeroshot, linear, mlp or knn")
    read_manifest(cfg.manifest)  # a bad manifest is named before anything else
    path = cfg.cache or features.find_cache(cfg.model, cfg.manifest, cfg.cache_dir)
    cache, parts = features.load(path, cfg.manifest)
    config_hash = config_digest(identity(cfg, cache.attrs.get("key"), cache.manifest_digest, cache.rows_digest))
    seeds = seeds_of(cfg)
    done = {s: _done(cfg, s, cache) for s in seeds}
    todo = [s for s in seeds if done[s] is None]
    results = {s: RunResult(cfg.run_dir(s), True, done[s]) for s in seeds if done[s] is not None}
    if todo:
        with features.torch_threads(cfg.threads):
            run = {"zeroshot": _zeroshot, "linear": _trained, "mlp": _trained, "knn": _knn}[cfg.method]
            for r in run(cfg, cache, parts, todo, config_hash):
                results[r.record["seed"]] = r
    return [results[s] for s in seeds]


def seeds_of(cfg: ExperimentConfig) -> tuple[int, ...]:
    """kNN has no randomness: one run, under the first seed."""
    return cfg.seeds if cfg.method in ("linear", "mlp", "zeroshot") else cfg.seeds[:1]


def _trained(cfg, cache, parts, seeds, config_hash):
    start = time.perf_counter()
    checkpoint = cfg.run_dir(seeds[0]).parent / f".training-{config_hash}-{'-'.join(map(str, seeds))}.pt"
    heads = train_heads(parts["train"], parts["val"], cfg.head.resolved(cfg.method), list(seeds), len(cache.classes),
                        checkpoint=checkpoint)
    seconds = (time.perf_counter() - start) / len(seeds)
    for h in heads:
        proba = {s: h.predict_proba(parts[s].x).numpy() for s in ("val", "test")}
        selection = {"lr": h.lr, "weight_decay": h.weight_decay, "best_epoch": h.best_epoch,
                     "val_loss": h.val_loss, "sweep": h.sweep, "criterion": "lowest validation loss"}
        yield _write_run(cfg, h.seed, cache, parts, proba, selection, seconds, config_hash)
    checkpoint.unlink(missing_ok=True)


def _knn(cfg, cache, parts, seeds, config_hash):
    start = time.perf_counter()
    tr, va = parts["train"], parts["val"]
    head = fit_knn(tr.x.numpy(), tr.y.numpy(), va.x.numpy(), va.y.numpy(), n_classes=len(cache.classes), ks=cfg.ks)
    proba = {s: head.predict_proba(parts[s].x.numpy()) for s in ("val", "test")}
    selection = {"k": head.k, "val_accuracy": head.val_accuracy, "criterion": "highest validation accuracy, smaller k on ties"}
    for seed in seeds:
        yield _write_run(cfg, seed, cache, parts, proba, selection, time.perf_counter() - start, config_hash)


def _zeroshot(cfg, cache, parts, seeds, config_hash):
    start = time.perf_counter()
    if cache.attrs.get("vision_only"):
        raise EmbedkitError(f"{cfg.model} is a vision-only encoder (no text tower), so it has no zero-shot; "
                            "use `embedkit probe` or `embedkit finetune` with it")
    missing = [f for f in cfg.prompts if f not in cache.text]
    if missing:
        raise EmbedkitError(f"{cache.path}: no prompt embeddings for {', '.join(missing)}; add them with "
                            f"`embedkit extract --model {cfg.model} --manifest {cfg.manifest} --text-only` "
                            "(MedCLIP/GLoRIA also need --tokenizer DIR)")
    n_classes, scale = len(cache.classes), float(cache.attrs.get("logit_scale", 100.0))
    x = {s: parts[s].x.numpy() for s in ("val", "test")}
    y = {s: parts[s].y.numpy() for s in ("val", "test")}

    def proba(fmt: str, split: str, repeat: int) -> np.ndarray:
        rng, text = np.random.default_rng(repeat), cache.text[fmt]
        local = None if text.local is None else text.local[parts[split].rows]
        return zeroshot.probabilities(x[split], text, fmt, n_classes=n_classes, logit_scale=scale, rng=rng, local=local)

    val_scores = {}
    for fmt in cfg.prompts:
        repeats = range(ZEROSHOT_REPEATS) if fmt in SAMPLED else range(1)
        accs = [float((proba(fmt, "val", r).argmax(1) == y["val"]).mean()) for r in repeats]
        val_scores[fmt] = {"accuracy_mean": float(np.mean(accs)), "accuracy_sd": float(np.std(accs)), "repeats": len(accs)}
    best = max(cfg.prompts, key=lambda f: (val_scores[f]["accuracy_mean"], -cfg.prompts.index(f)))
    sampled = best in SAMPLED
    for seed in seeds:  # a deterministic format gives identical runs for every seed
        repeat = seed if sampled else 0
        p = {s: proba(best, s, repeat) for s in ("val", "test")}
        selection = {"prompt_format": best, "val_scores": val_scores, "criterion": "highest validation mean accuracy",
                     "prompt_sample_seed": repeat if sampled else None, "n_prompts": SAMPLED.get(best),
                     "prompts_used": zeroshot.used_prompts(cache.text[best], best, n_classes, repeat),
                     "scoring": {"clip": "mean embedding", "gloria": "max, column z-score",
                                 "cxrclip": "mean cosine over a per-image sample"}[best],
                     "similarity": "global cosine" if cache.text[best].local is None
                                   else "(local word-region + global cosine) / 2, GLoRIA's"}
        yield _write_run(cfg, seed, cache, parts, p, selection, time.perf_counter() - start, config_hash)
