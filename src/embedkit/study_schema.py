"""The schema of a study TOML (pydantic): unknown keys, unknown models and wrong types are errors
that name the key and the closest valid name, instead of settings silently ignored.

``validate(raw, path)`` returns the config as a plain dict with only the keys the file set (types
coerced), which ``embedkit.study`` reads.
"""

from __future__ import annotations

import difflib
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from embedkit.errors import EmbedkitError

Method = Literal["zeroshot", "linear", "mlp", "knn", "lora", "full"]
Format = Literal["clip", "gloria", "cxrclip"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Data(_Strict):
    kind: Literal["phantom", "nih", "manifest"]
    out: Optional[str] = None
    path: Optional[str] = None
    per_group: int = 50
    size: int = 224
    seed: int = 0
    bias: list[str] = []
    duplicates: int = 0
    metadata: Optional[str] = None
    images: Optional[str] = None


class Paths(_Strict):
    cache_dir: str = "cache"
    runs_dir: str = "runs"
    report_dir: str = "reports"


class Extract(_Strict):
    batch_size: int = 64
    workers: Optional[int] = None
    device: str = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"


class Model(_Strict):
    family: Optional[Literal["open_clip", "hf-clip", "hf-vision"]] = None   # your own checkpoint, named by its key
    arch: Optional[str] = None
    weights: Optional[str] = None
    tokenizer: Optional[str] = None
    methods: Optional[list[Method]] = None


class Mitigated(_Strict):
    """Fairness interventions on a method (ERM always runs too) and how the sweep is chosen."""

    mitigate: list[Literal["reweight", "resample", "groupdro", "adversarial", "temperature", "offsets"]] = []
    attribute: Optional[str] = None
    selection: Literal["loss", "overall", "worst-group", "pareto", "dto"] = "loss"
    strength: Optional[float] = None


class ZeroShot(Mitigated):
    seeds: Optional[list[int]] = None
    prompts: Literal["all"] | list[Format] = "all"


class Head(Mitigated):
    seeds: Optional[list[int]] = None
    epochs: int = 150
    batch_size: int = 64
    lrs: Optional[list[float]] = None
    weight_decays: Optional[list[float]] = None
    hidden: int = 128
    dropout: float = 0.2


class Knn(Mitigated):
    seeds: Optional[list[int]] = None
    ks: Optional[list[int]] = None


class Finetune(_Strict):
    seeds: Optional[list[int]] = None
    epochs: int = 150
    batch_size: int = 64
    lrs: Optional[list[float]] = None
    weight_decays: Optional[list[float]] = None
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.1
    lora_targets: Optional[str] = None
    augment: bool = False
    head_init: Literal["probe", "random"] = "probe"
    device: str = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    grad_checkpointing: bool = False
    compile: bool = False
    memory_limit_gb: float = 4.0
    workers: Optional[int] = None
    skip_bad: bool = False


class Methods(_Strict):
    zeroshot: Optional[ZeroShot] = None
    linear: Optional[Head] = None
    mlp: Optional[Head] = None
    knn: Optional[Knn] = None
    lora: Optional[Finetune] = None
    full: Optional[Finetune] = None


class Report(_Strict):
    n_boot: int = 1000
    adjust: Literal["bh", "holm"] = "bh"      # multiple-testing adjustment over the report's gaps


class Audit(_Strict):
    n_boot: int = 1000
    n_perm: int = 1000
    threshold: Optional[float] = None
    projection: Literal["pca", "umap"] = "pca"


class Study(_Strict):
    seeds: list[int] = [0]
    dataset: Optional[str] = None
    folds: Optional[int] = None          # K-fold cross-validation rounds from one store (report pools them)
    attributes: Optional[list[str]] = None   # sensitive attributes (embedkit.attributes); default sex, age, sex*age
    vars: dict[str, str] = {}
    data: Data
    paths: Paths = Paths()
    extract: Extract = Extract()
    models: dict[str, Model]
    methods: Methods
    report: Report = Report()
    audit: Optional[Audit] = None        # what the embeddings know: attribute probes, duplicates, maps

    @field_validator("attributes")
    @classmethod
    def _declaration(cls, attributes: Optional[list[str]]) -> Optional[list[str]]:
        if attributes:
            from embedkit.attributes import parse

            try:
                parse(",".join(attributes))
            except EmbedkitError as exc:
                raise ValueError(str(exc)) from None
        return attributes

    @field_validator("models")
    @classmethod
    def _known_models(cls, models: dict[str, Model]) -> dict[str, Model]:
        from embedkit.models import registry

        valid = registry.names() + [f"{n}-tiny" for n in registry.names()]
        for name, spec in models.items():
            if spec.family is not None:
                if spec.weights is None:
                    raise ValueError(f"model {name!r}: family {spec.family} needs weights = PATH")
                continue
            if name not in valid:
                raise ValueError(f"unknown model {name!r}{_closest(name, valid)}")
        return models


def _closest(name: str, valid) -> str:
    close = difflib.get_close_matches(str(name), list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f"; valid: {', '.join(valid)}"


def _schema_at(loc: tuple) -> type[BaseModel] | None:
    """The model class that owns the key at ``loc`` (for 'did you mean' on unknown keys)."""
    node: type[BaseModel] | None = Study
    for part in loc[:-1]:
        if node is None or isinstance(part, int):
            return None
        if node is Study and part == "models":
            node = Model
            continue
        if node is Model:  # models.<name>.<key>
            continue
        field = node.model_fields.get(str(part))
        ann = field.annotation if field else None
        args = getattr(ann, "__args__", ()) or (ann,)
        node = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return node


def _message(err: dict) -> str:
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        owner = _schema_at(loc)
        hint = _closest(loc[-1], owner.model_fields) if owner else ""
        return f"unknown key '{key}'{hint}"
    if err["type"] == "missing":
        return f"missing key '{key}'"
    return f"'{key}': {err['msg'].removeprefix('Value error, ')}"


def validate(raw: dict, path) -> dict:
    """The config with only the keys it set, types coerced; errors name the file and every bad key."""
    try:
        return Study.model_validate(raw).model_dump(exclude_unset=True)
    except ValidationError as exc:
        problems = "; ".join(_message(e) for e in exc.errors()[:6])
        raise EmbedkitError(f"{path}: {problems}") from None
