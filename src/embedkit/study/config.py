"""A study TOML, read and validated (``study.schema``): the paths it names (relative to the file), its
rounds (the manifest, or the K cross-validation folds), models and methods."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from embedkit.errors import EmbedkitError
from embedkit.spec import SWEEP, WHERE


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
        return {k: self.resolve(str(p.get(k, getattr(WHERE, k)))) for k in ("cache_dir", "runs_dir", "report_dir")}

    @property
    def manifest(self) -> Path:
        from embedkit.study.data import manifest_of

        return manifest_of(self.config["data"], self.resolve)

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
    from embedkit.study.schema import validate

    study = Study(path, validate(config, path), path.parent.resolve())
    _define_own_models(study)
    return study


def _define_own_models(study: Study) -> None:
    """Register each ``[models.NAME]`` with a ``family`` (open_clip, hf-clip, hf-vision) under its name."""
    from embedkit.models.registry import define

    for name, spec in study.models.items():
        if spec.get("family"):
            define(spec["family"], name, arch=spec.get("arch"))


def seeds(study: Study, method: str) -> tuple[int, ...]:
    return tuple(study.methods[method].get("seeds", study.config.get("seeds", SWEEP.seeds)))


def n_images(study: Study) -> int:
    data = study.config["data"]
    from embedkit.data.phantom import PhantomSpec

    return 24 * int(data.get("per_group", PhantomSpec.per_group)) if data["kind"] != "manifest" else 1200
