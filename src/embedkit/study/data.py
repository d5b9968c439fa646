"""The study's data step: build (or rebuild) the dataset its ``[data]`` table describes with the registered
builder of that ``kind`` (``embedkit.data.registry``; ``kind = "manifest"`` names a manifest already made),
and the cross-validation folds."""

from __future__ import annotations

from pathlib import Path

from embedkit.errors import EmbedkitError
from embedkit.study.steps import Step

GIVEN = "manifest"       # [data] kind for a manifest built elsewhere: path = "..."


def kinds() -> list[str]:
    """Every valid [data] kind: the registered builders, and a given manifest."""
    from embedkit.data import registry

    return [*registry.names(), GIVEN]


def manifest_of(table, resolve) -> Path:
    """The manifest a [data] table makes (or names)."""
    from embedkit.data import registry

    if table.kind == GIVEN:
        return resolve(table.path)
    return registry.get(table.kind).manifest(resolve(table.out))


def data_step(study):
    """The data step of ``study``: done, to run, or stale (the builder says its options changed)."""
    table, manifest = study.config.data, study.manifest
    builder = None
    if table.kind != GIVEN:
        from embedkit.data import registry

        builder = registry.get(table.kind)
        options = builder.parse(table.model_dump(exclude={"kind", "out"}), study.resolve)
    change = builder.changed(options, manifest) if builder and builder.changed and manifest.is_file() else ""

    def build_all():
        if not manifest.is_file() or change:
            if builder is None:
                raise EmbedkitError(f"{manifest}: manifest not found")
            builder.run(options, study.resolve(table.out))
        if study.config.folds:
            from embedkit.data.folds import make_folds

            seed = {"seed": table.seed} if getattr(table, "seed", None) is not None else {}
            make_folds(manifest, manifest.parent / "folds", k=study.config.folds, **seed)

    done = all(m.is_file() for _, m in study.rounds) and manifest.is_file() and not change
    return Step("data", f"{table.kind} → {manifest}", "stale" if change else "done" if done else "to run", 5.0,
                build_all, change)
