"""A study TOML, read and validated (``study.schema``) into a typed config: the paths it names (relative to the file), its
rounds (the manifest, or the K cross-validation folds), models and methods."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from embedkit.errors import EmbedkitError


@dataclass
class Study:
    """A validated study file: ``config`` is the typed study (``study.schema``: one section per table, the
    [data] table of its kind, one section per method it runs), ``root`` the folder its paths are relative to."""

    path: Path
    config: BaseModel
    root: Path

    def resolve(self, value: str | None) -> Path | None:
        """Paths in the study file are relative to the file's folder."""
        if value in (None, ""):
            return None
        p = Path(str(value).format(**self.config.vars))
        return (p if p.is_absolute() else self.root / p).resolve()

    @property
    def paths(self) -> dict[str, Path]:
        return {k: self.resolve(getattr(self.config.paths, k)) for k in ("cache_dir", "runs_dir", "report_dir")}

    @property
    def manifest(self) -> Path:
        from embedkit.study.data import manifest_of

        return manifest_of(self.config.data, self.resolve)

    @property
    def rounds(self) -> list[tuple[str | None, Path]]:
        """(dataset name, manifest) of every round: the manifest itself, or with ``folds = K`` the K
        cross-validation rounds (``<dataset>-fold<i>``; the report pools their test predictions)."""
        k = self.config.folds
        if not k:
            return [(self.config.dataset, self.manifest)]
        base = self.config.dataset or self.manifest.parent.name
        return [(f"{base}-fold{i}", self.manifest.parent / "folds" / f"fold-{i}.csv") for i in range(k)]

    @property
    def models(self) -> dict[str, BaseModel]:
        return self.config.models

    @property
    def attributes(self) -> str | None:
        """The declared sensitive attributes as one declaration ('sex,age,site'); None: the default."""
        declared = self.config.attributes
        return ",".join(declared) if declared else None

    @property
    def methods(self) -> dict[str, BaseModel]:
        """The methods the study runs, each with its typed section."""
        return {name: section for name, section in self.config.methods if section is not None}

    def options(self, method: str) -> dict:
        """The settings the file gave ``method`` (the library configs' own defaults for the rest)."""
        return {k: tuple(v) if isinstance(v, list) else v
                for k, v in self.methods[method].model_dump(exclude_unset=True).items() if k != "seeds"}

    def seeds(self, method: str) -> tuple[int, ...]:
        own = self.methods[method].seeds
        return tuple(own if own is not None else self.config.seeds)

    def runs(self, model: str, method: str) -> bool:
        """Whether ``model`` takes part in ``method``: listed in [methods] and, when the model names
        its own ``methods`` (e.g. vit-imagenet only for full fine-tuning), among those."""
        own = self.models[model].methods
        return method in self.methods and (own is None or method in own)

    def check_declared(self) -> None:
        """Once the manifest exists, an attribute the study declares and it lacks is one error, before any step
        (not the same failure in every step); so is a runs folder holding runs of another kind of task."""
        from embedkit.manifest import read_manifest
        from embedkit.runs import check_one_kind

        if self.manifest.is_file():
            read_manifest(self.manifest, attributes=self.attributes)
        check_one_kind(self.paths["runs_dir"], self.task().kind)

    def task(self):
        """The declared task (``spec.Task``), checked."""
        from embedkit import tasks
        from embedkit.spec import Task

        t = self.config.task
        return tasks.check(Task(kind=t.kind, findings=tuple(t.findings) if t.findings else None, positive=t.positive,
                                threshold=t.threshold))

    def n_images(self) -> int:
        """Roughly how many images the study reads (for the plan's time estimates)."""
        from embedkit.data.phantom import PhantomSpec

        return 24 * int(getattr(self.config.data, "per_group", PhantomSpec.per_group))


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
    from embedkit.study.schema import validate

    study = Study(path, validate(config, path), path.parent.resolve())
    _define_own_models(study)
    _check_task(study)
    return study


def _check_task(study: Study) -> None:
    """A binary or multi-label study runs the methods that predict findings."""
    from embedkit.tasks import FINDING_METHODS

    task = study.task()
    other = [m for m in study.methods if m not in FINDING_METHODS]
    if task.kind != "multiclass" and other:
        raise EmbedkitError(f"{study.path}: [task] kind = {task.kind!r} runs {', '.join(FINDING_METHODS)} so far; "
                            f"remove [methods.{other[0]}]")


def _define_own_models(study: Study) -> None:
    """Register each ``[models.NAME]`` with a ``family`` (open_clip, hf-clip, hf-vision) under its name."""
    from embedkit.models.registry import define

    for name, spec in study.models.items():
        if spec.family:
            define(spec.family, name, arch=spec.arch)
