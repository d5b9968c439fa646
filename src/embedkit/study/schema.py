"""The schema of a study TOML (pydantic): unknown keys, unknown models and wrong types are errors
that name the key and the closest valid name, instead of settings silently ignored.

Nothing here is a hand-written list: the sections are built from the configs' dataclasses (their types
and defaults: ``HeadConfig`` through each head's ``options``, ``FinetuneConfig``, ``ExtractConfig``,
``AuditConfig``, ``PhantomSpec``, ``spec.Where``) and the registries (heads, interventions, selection
strategies, model families, prompt formats, dataset kinds), when a file is validated.
``validate(raw, path)`` returns the typed study that ``embedkit.study`` reads.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from pathlib import Path
from typing import Annotated, Literal, Optional

from annotated_types import Ge
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from embedkit.errors import EmbedkitError
from embedkit.spec import FAIRNESS, PRECISIONS, SWEEP, TRAINING_PRECISIONS, Count, Replicates, Seed, Task, Where

# FinetuneConfig's fields a study sets elsewhere (the model, its weights, the rounds' paths, the attributes)
FINETUNE_FIXED = ("model", "manifest", "mode", "weights", "runs_dir", "dataset", "seeds", "resume", "force",
                  "attributes", "arch", "task")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _fields(cls, skip=(), choices=None) -> dict:
    """A dataclass's fields as pydantic field definitions: its types and its defaults (never restated here);
    ``choices`` narrows a text field to the values its owner accepts."""
    hints, choices = typing.get_type_hints(cls, include_extras=True), choices or {}     # with their bounds
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = (f.default if f.default is not dataclasses.MISSING else
                   f.default_factory() if f.default_factory is not dataclasses.MISSING else ...)
        kind = Literal[choices[f.name]] if f.name in choices else _plain(hints[f.name])
        out[f.name] = (kind, default.as_posix() if isinstance(default, Path) else default)
    return out


def _plain(kind):
    """TOML has no paths: a Path field is a string (resolved against the study file's folder)."""
    paths = {Path: str, Optional[Path]: Optional[str], list[Path]: list[str]}
    return paths.get(kind, kind)


def _data():
    """[data]: one table per registered dataset builder, told apart by ``kind``; its keys are the builder's
    options (``embedkit.data.registry``), with ``out``; ``kind = "manifest"`` names one made elsewhere."""
    from embedkit.data import registry
    from embedkit.study.data import GIVEN

    tables = [create_model(_title(n), __base__=_Strict, kind=(Literal[n], ...), out=(str, ...),
                           **_fields(registry.get(n).options)) for n in registry.names()]
    tables.append(create_model("Manifest", __base__=_Strict, kind=(Literal[GIVEN], ...), path=(str, ...)))
    return Annotated[typing.Union[tuple(tables)], Field(discriminator="kind")]


def _title(name: str) -> str:
    return "Data" + name.title().replace("-", "")


def _model() -> type[BaseModel]:
    from embedkit.models import registry

    return create_model("Model", __base__=_Strict,
                        family=(Optional[Literal[tuple(registry.generic_names())]], None),  # your own checkpoint
                        arch=(Optional[str], None), weights=(Optional[str], None), tokenizer=(Optional[str], None),
                        methods=(Optional[list[Literal[tuple(_method_names())]]], None))


def _method_names() -> tuple[str, ...]:
    from embedkit.heads import base

    from embedkit.finetune import modes

    return (*base.heads(), *modes.names())


def _methods() -> type[BaseModel]:
    """One section per registered method: the heads' own options (``Method.options``), the interventions
    and selection strategies that apply to them, and fine-tuning's settings (``FinetuneConfig``)."""
    from embedkit.finetune import modes
    from embedkit.finetune.head import HEAD_INITS
    from embedkit.finetune.train import FinetuneConfig
    from embedkit.heads import base
    from embedkit.heads.selection import STRATEGIES

    shared = {"seeds": (Optional[list[Seed]], None),
              "mitigate": (list[Literal[base.interventions()]], []), "attribute": (Optional[str], FAIRNESS.attribute),
              "selection": (Literal[STRATEGIES], FAIRNESS.selection), "strength": (Optional[float], None)}
    heads = {n: create_model(n.title(), __base__=_Strict, **shared, **type(base.get(n)).options()) for n in base.heads()}
    tuning = create_model("Finetune", __base__=_Strict, seeds=(Optional[list[Seed]], None),
                          **_fields(FinetuneConfig, skip=FINETUNE_FIXED,
                                    choices={"precision": TRAINING_PRECISIONS, "head_init": HEAD_INITS,
                                             "selection": STRATEGIES}))
    sections = {n: (Optional[m], None) for n, m in heads.items()} | {n: (Optional[tuning], None) for n in modes.names()}
    return create_model("Methods", __base__=_Strict, **sections)


def _section(cls, name: str, skip=()) -> type[BaseModel]:
    return create_model(name, __base__=_Strict, **_fields(cls, skip))


def _extract() -> type[BaseModel]:
    from embedkit.cache.extract import ExtractConfig

    keep = ("batch_size", "workers", "device", "precision")
    skip = [f.name for f in dataclasses.fields(ExtractConfig) if f.name not in keep]
    return create_model("Extract", __base__=_Strict, **_fields(ExtractConfig, skip, choices={"precision": PRECISIONS}))


def _audit() -> type[BaseModel]:
    from embedkit.audit import AuditConfig

    keep = ("n_boot", "n_perm", "threshold", "projection", "solver")
    return create_model("Audit", __base__=_Strict, models=(Optional[list[str]], None),   # None: every cached model
                        **_fields(AuditConfig, skip=[f.name for f in dataclasses.fields(AuditConfig) if f.name not in keep]))


def _report() -> type[BaseModel]:
    from embedkit.metrics.intervals import ADJUSTMENTS

    return create_model("Report", __base__=_Strict, n_boot=(Replicates, FAIRNESS.n_boot),
                        adjust=(Literal[ADJUSTMENTS], FAIRNESS.adjust),
                        threads=(Optional[Count], None))    # None: a core per block of replicates


def _task() -> type[BaseModel]:
    """[task]: what is predicted (``spec.Task``: multiclass, binary with a positive finding, multilabel)."""
    from embedkit.tasks import KINDS

    return create_model("Task", __base__=_Strict, **_fields(Task, choices={"kind": KINDS}))


def _paths() -> type[BaseModel]:
    return _section(Where, "Paths", skip=("manifest", "dataset"))


class _Study(_Strict):
    seeds: list[Seed] = list(SWEEP.seeds)
    dataset: Optional[str] = None
    folds: Optional[Annotated[int, Ge(2)]] = None   # K-fold cross-validation rounds from one store (report pools them)
    attributes: Optional[list[str]] = None   # sensitive attributes (embedkit.attributes); default sex, age, sex*age
    vars: dict[str, str] = {}

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

    @field_validator("models", check_fields=False)
    @classmethod
    def _known_models(cls, models: dict) -> dict:
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


def schema() -> type[BaseModel]:
    """The study file's schema, built from the registries as they are now (a head, intervention, model
    family or dataset kind registered at runtime is a valid key at once)."""
    paths, extract, report, task = _paths(), _extract(), _report(), _task()
    sections = {"data": (_data(), ...), "paths": (paths, paths()), "extract": (extract, extract()), "task": (task, task()),
                "models": (dict[str, _model()], ...), "methods": (_methods(), ...), "report": (report, report()),
                "audit": (Optional[_audit()], None)}     # audit: what the embeddings know (probes, duplicates, maps)
    return create_model("Study", __base__=_Study, **sections)


def _closest(name: str, valid) -> str:
    close = difflib.get_close_matches(str(name), list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f"; valid: {', '.join(valid)}"


def _schema_at(study: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model class that owns the key at ``loc`` (for 'did you mean' on unknown keys)."""
    node: type[BaseModel] | None = study
    model = _model()
    if loc[0] == "data" and len(loc) == 3:      # data.<kind>.<key>: the table of that kind
        tables = typing.get_args(study.model_fields["data"].annotation)
        return next((m for m in tables if m.model_fields["kind"].annotation == Literal[loc[1]]), None)
    for part in loc[:-1]:
        if node is None or isinstance(part, int):
            return None
        if node is study and part == "models":
            node = model
            continue
        if node is model:  # models.<name>.<key>
            continue
        field = node.model_fields.get(str(part))
        ann = field.annotation if field else None
        args = getattr(ann, "__args__", ()) or (ann,)
        node = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return node


def _message(study: type[BaseModel], err: dict) -> str:
    loc = tuple(err["loc"])
    shown = loc[:1] + loc[2:] if loc[:1] == ("data",) and len(loc) > 2 else loc     # drop the kind's tag
    key = ".".join(str(p) for p in shown)
    if err["type"] == "extra_forbidden":
        owner = _schema_at(study, loc)
        hint = _closest(loc[-1], owner.model_fields) if owner else ""
        return f"unknown key '{key}'{hint}"
    if err["type"] == "missing":
        return f"missing key '{key}'"
    if err["type"] == "union_tag_invalid":
        from embedkit.study.data import kinds

        return f"'{key}.kind': unknown kind {err['ctx']['tag']!r}{_closest(err['ctx']['tag'], kinds())}"
    return f"'{key}': {err['msg'].removeprefix('Value error, ')}"


def validate(raw: dict, path) -> BaseModel:
    """The typed study (types coerced, defaults filled; ``model_dump(exclude_unset=True)`` gives what the
    file set); errors name the file and every bad key."""
    study = schema()
    try:
        return study.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_message(study, e) for e in exc.errors()[:6])
        raise EmbedkitError(f"{path}: {problems}") from None


def markdown() -> str:
    """Every key of a study file, section by section, with its type and default (docs/study.md is this text)."""
    study = schema()
    lines = ["# The study file: every key", "",
             "Generated from the schema (`embedkit.study.schema.markdown()`; a test keeps this file equal to it).",
             "Paths are relative to the study file; `{name}` in a path takes `vars.name` (`--set vars.name=...`).", ""]
    lines += _table("top level", study, skip={"data", "paths", "extract", "models", "methods", "report", "audit", "task"})
    methods = study.model_fields["methods"].annotation
    for name, field in study.model_fields.items():
        if name == "methods":
            for method, sub in methods.model_fields.items():
                lines += _table(f"[methods.{method}]", _model_of(sub.annotation))
        elif name == "models":
            lines += _table("[models.NAME]", _model())
        elif name == "data":
            for table in typing.get_args(field.annotation):
                kind = typing.get_args(table.model_fields["kind"].annotation)[0]
                lines += _table(f'[data] kind = "{kind}"', table, skip={"kind"})
        elif _model_of(field.annotation) is not None:
            lines += _table(f"[{name}]", _model_of(field.annotation))
    return "\n".join(lines).rstrip() + "\n"


def _model_of(annotation) -> type[BaseModel] | None:
    args = typing.get_args(annotation) or (annotation,)
    return next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)


def _table(title: str, model: type[BaseModel], skip=()) -> list[str]:
    rows = [f"| `{k}` | {_type_name(f.annotation, f.metadata)} | {'required' if f.is_required() else f'`{f.default!r}`'} |"
            for k, f in model.model_fields.items() if k not in skip]
    return [f"## {title}", "", "| key | type | default |", "|---|---|---|", *rows, ""]


def _type_name(annotation, bounds=()) -> str:
    """A key's type as the docs write it: ``int ≥ 1`` for ``Annotated[int, Ge(ge=1)]`` (spec's bounds)."""
    text = str(annotation if not bounds else typing.Annotated[(annotation, *bounds)])
    text = text.replace("typing.", "").replace("NoneType", "None").replace("<class '", "").replace("'>", "")
    return _BOUNDED.sub(_bounded, text).replace("|", "\\|")


_BOUNDED = re.compile(r"Annotated\[(\w+), ([^\[\]]+)\]")
_SIGNS = {"ge": "≥", "gt": ">", "lt": "<", "le": "≤"}


def _bounded(match: re.Match) -> str:
    bounds = re.findall(r"\w+\((\w+)=([^)]+)\)", match.group(2))
    return f"{match.group(1)} " + ", ".join(f"{_SIGNS[k]} {v}" for k, v in bounds)
