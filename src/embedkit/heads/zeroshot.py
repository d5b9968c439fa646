"""Zero-shot classification from cached image and prompt embeddings (see ``embedkit.prompts``).

clip: cosine to the renormalised mean of a class's normalised prompt embeddings, times the
model's logit scale. gloria: max cosine over n randomly sampled prompts per class, then each
class column standardised over the scored images (GLoRIA's zero_shot_classification).
cxrclip: for every image, mean cosine over n prompts per class drawn afresh for that image
(CXR-CLIP's evaluator), times the logit scale. Probabilities are the softmax of these scores.
"""

from __future__ import annotations

import numpy as np

from embedkit.cache.layout import TextSet
from embedkit.errors import EmbedkitError
from embedkit.heads.base import Fitted, Method, register
from embedkit.prompts import FORMATS, SAMPLED

REPEATS = 10  # sampled prompt formats are scored with 10 seeds on validation, as the paper ran them


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-12)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def sample_prompts(text: TextSet, n_classes: int, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Indices of ``n`` prompts per class (all of them when a class has fewer)."""
    out = []
    for c in range(n_classes):
        idx = np.flatnonzero(text.class_index == c)
        out.append(idx if len(idx) <= n else rng.choice(idx, n, replace=False))
    return out


def _per_image_mean(sims: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(N,) mean of a random ``n`` of each row's similarities (all when a class has fewer), one draw per row."""
    if sims.shape[1] <= n:
        return sims.mean(1)
    pick = np.argsort(rng.random(sims.shape), axis=1)[:, :n]
    return np.take_along_axis(sims, pick, axis=1).mean(1)


def used_prompts(text: TextSet, fmt: str, n_classes: int, seed: int) -> dict:
    """What a sampled run used, for its run.json: gloria's drawn prompts; cxrclip's per-image draw rule."""
    if fmt == "gloria":
        chosen = sample_prompts(text, n_classes, SAMPLED["gloria"], np.random.default_rng(seed))
        return {"per_class": [[text.prompts[i] for i in idx] for idx in chosen]}
    if fmt == "cxrclip":
        return {"per_image": f"{SAMPLED['cxrclip']} of each class's prompts drawn for every image with numpy seed {seed}",
                "pool_sizes": [int((text.class_index == c).sum()) for c in range(n_classes)]}
    return {"all": True}


def scores(images: np.ndarray, text: TextSet, fmt: str, *, n_classes: int, logit_scale: float,
           rng: np.random.Generator | None = None, n_prompts: int | None = None,
           local: np.ndarray | None = None) -> np.ndarray:
    """(N, C) class scores (logits) of ``images`` for one prompt format.

    ``local`` (N, M), the cached word-region similarity of these image rows (GLoRIA), switches
    every format to GLoRIA's image-prompt similarity (local + global cosine) / 2, pooled per format:
    gloria max over its sample, cxrclip mean over its per-image sample, clip mean over all prompts."""
    img, txt = _normalize(np.asarray(images, dtype=np.float64)), _normalize(np.asarray(text.embeddings, dtype=np.float64))
    if local is not None:
        return _pooled(0.5 * (np.asarray(local, dtype=np.float64) + img @ txt.T), text, fmt, n_classes=n_classes,
                       logit_scale=logit_scale, rng=rng, n_prompts=n_prompts)
    if fmt == "clip":
        weights = _normalize(np.stack([txt[text.class_index == c].mean(0) for c in range(n_classes)]))
        return logit_scale * img @ weights.T
    if fmt == "gloria":
        chosen = sample_prompts(text, n_classes, n_prompts or SAMPLED["gloria"], rng or np.random.default_rng(0))
        s = np.stack([(img @ txt[idx].T).max(1) for idx in chosen], axis=1)
        if len(s) > 1:
            s = (s - s.mean(0)) / s.std(0).clip(1e-12)
        return s
    if fmt == "cxrclip":
        rng = rng or np.random.default_rng(0)
        n = n_prompts or SAMPLED["cxrclip"]
        return logit_scale * np.stack([_per_image_mean(img @ txt[text.class_index == c].T, n, rng)
                                       for c in range(n_classes)], axis=1)
    raise ValueError(f"unknown prompt format {fmt!r}")


def _pooled(sim: np.ndarray, text: TextSet, fmt: str, *, n_classes: int, logit_scale: float,
            rng: np.random.Generator | None, n_prompts: int | None) -> np.ndarray:
    """Class scores from a full (N, M) image-prompt similarity matrix."""
    rng = rng or np.random.default_rng(0)
    if fmt == "gloria":
        chosen = sample_prompts(text, n_classes, n_prompts or SAMPLED["gloria"], rng)
        s = np.stack([sim[:, idx].max(1) for idx in chosen], axis=1)
        return (s - s.mean(0)) / s.std(0).clip(1e-12) if len(s) > 1 else s
    if fmt == "cxrclip":
        n = n_prompts or SAMPLED["cxrclip"]
        return logit_scale * np.stack([_per_image_mean(sim[:, text.class_index == c], n, rng) for c in range(n_classes)], 1)
    if fmt == "clip":
        return logit_scale * np.stack([sim[:, text.class_index == c].mean(1) for c in range(n_classes)], 1)
    raise ValueError(f"unknown prompt format {fmt!r}")


def probabilities(images, text: TextSet, fmt: str, **kw) -> np.ndarray:
    return _softmax(scores(images, text, fmt, **kw))


@register
class ZeroShot(Method):
    """Zero-shot from cached image and prompt embeddings; the prompt format chosen on validation
    accuracy (a sampled format by its mean over REPEATS draws); seeds vary the prompt draw."""

    name, rank = "zeroshot", 0

    @classmethod
    def options(cls):
        from typing import Literal

        return {"prompts": (Literal["all"] | list[Literal[FORMATS]], "all")}     # "all": every format, chosen on validation

    def settings(self, cfg) -> dict:
        return {"prompts": cfg.prompts}

    def fit(self, cfg, cache, parts, seeds):
        _check_text(cfg, cache)
        if parts["val"].y.dim() == 2:
            yield from _findings(cfg, cache, parts, seeds)
            return
        n_classes, scale = len(cache.classes), float(cache.attrs.get("logit_scale", 100.0))
        x = {s: parts[s].x.numpy() for s in ("val", "test")}
        y_val = parts["val"].y.numpy()

        def proba(fmt: str, split: str, repeat: int) -> np.ndarray:
            text = cache.text[fmt]
            local = None if text.local is None else text.local[parts[split].rows]
            return probabilities(x[split], text, fmt, n_classes=n_classes, logit_scale=scale,
                                 rng=np.random.default_rng(repeat), local=local)

        val_scores = {}
        for fmt in cfg.prompts:
            accs = [float((proba(fmt, "val", r).argmax(1) == y_val).mean()) for r in range(REPEATS if fmt in SAMPLED else 1)]
            val_scores[fmt] = {"accuracy_mean": float(np.mean(accs)), "accuracy_sd": float(np.std(accs)), "repeats": len(accs)}
        best = max(cfg.prompts, key=lambda f: (val_scores[f]["accuracy_mean"], -cfg.prompts.index(f)))
        for seed in seeds:  # a deterministic format gives identical runs for every seed
            repeat = seed if best in SAMPLED else 0
            yield Fitted(seed, {s: proba(best, s, repeat) for s in ("val", "test")},
                         _selection(cache, best, val_scores, repeat, n_classes))


def _check_text(cfg, cache) -> None:
    if cache.attrs.get("vision_only"):
        raise EmbedkitError(f"{cfg.model} is a vision-only encoder (no text tower), so it has no zero-shot; "
                            "use `embedkit probe` or `embedkit finetune` with it")
    missing = [f for f in cfg.prompts if f not in cache.text]
    if missing:
        raise EmbedkitError(f"{cache.path}: no prompt embeddings for {', '.join(missing)}; add them with "
                            f"`embedkit extract --model {cfg.model} --manifest {cfg.manifest} --text-only` "
                            "(MedCLIP/GLoRIA also need --tokenizer DIR)")


def _selection(cache, best: str, val_scores: dict, repeat: int, n_classes: int) -> dict:
    sampled = best in SAMPLED
    return {"prompt_format": best, "val_scores": val_scores, "criterion": "highest validation mean accuracy",
            "prompt_sample_seed": repeat if sampled else None, "n_prompts": SAMPLED.get(best),
            "prompts_used": used_prompts(cache.text[best], best, n_classes, repeat),
            "scoring": {"clip": "mean embedding", "gloria": "max, column z-score",
                        "cxrclip": "mean cosine over a per-image sample"}[best],
            "similarity": "global cosine" if cache.text[best].local is None
                          else "(local word-region + global cosine) / 2, GLoRIA's"}


def _findings(cfg, cache, parts, seeds):
    """Binary / multi-label findings, CheXzero's way: per finding the softmax over its positive and negative
    prompt sides (``embedkit.prompts``: classes ``F`` and ``no:F``); a No Finding label gets the probability
    that no other finding is present, prod(1 - p_F). The format with the highest mean validation AUROC over
    the findings is kept."""
    from embedkit.heads.selection import finding_auc
    from embedkit.tasks import NO_FINDING

    findings, scale = cache.classes, float(cache.attrs.get("logit_scale", 100.0))
    own = [f for f in findings if f != NO_FINDING]
    x = {s: parts[s].x.numpy() for s in ("val", "test")}

    def proba(fmt: str, split: str, repeat: int) -> np.ndarray:
        text = cache.text[fmt]
        local = None if text.local is None else text.local[parts[split].rows]
        s = scores(x[split], text, fmt, n_classes=2 * len(own), logit_scale=scale, rng=np.random.default_rng(repeat),
                   local=local)
        p = 1.0 / (1.0 + np.exp(-(s[:, :len(own)] - s[:, len(own):])))          # softmax over (F, no F)
        return np.stack([np.prod(1 - p, 1) if f == NO_FINDING else p[:, own.index(f)] for f in findings], 1)

    y_val = parts["val"].y.numpy()
    val_scores = {}
    for fmt in cfg.prompts:
        aucs = [finding_auc(y_val, proba(fmt, "val", r)) for r in range(REPEATS if fmt in SAMPLED else 1)]
        val_scores[fmt] = {"auroc_mean": float(np.mean(aucs)), "auroc_sd": float(np.std(aucs)), "repeats": len(aucs)}
    best = max(cfg.prompts, key=lambda f: (val_scores[f]["auroc_mean"], -cfg.prompts.index(f)))
    text = cache.text[best]
    pairs = {f: {"positive": int((text.class_index == i).sum()), "negative": int((text.class_index == len(own) + i).sum())}
             for i, f in enumerate(own)}
    for seed in seeds:
        repeat = seed if best in SAMPLED else 0
        yield Fitted(seed, {s: proba(best, s, repeat) for s in ("val", "test")},
                     {"prompt_format": best, "val_scores": val_scores, "prompt_sample_seed": repeat if best in SAMPLED else None,
                      "criterion": "highest validation mean AUROC over the findings", "prompt_pairs": pairs,
                      "pair": "softmax over the finding's positive and negative prompt sides (CheXzero)",
                      "no_finding": "prod(1 - p) over the other findings" if NO_FINDING in findings else None})
