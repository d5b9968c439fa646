"""The study's data step: build (or rebuild) the dataset its config describes — the phantom, regenerated
when its settings change, or the NIH subset — and the cross-validation folds."""

from __future__ import annotations

import json
from pathlib import Path

from embedkit.errors import EmbedkitError


def phantom_spec(data: dict):
    from embedkit.data.phantom import Bias, PhantomSpec

    return PhantomSpec(per_group=int(data.get("per_group", 50)), size=int(data.get("size", 224)),
                       duplicates=int(data.get("duplicates", 0)), seed=int(data.get("seed", 0)),
                       bias=[Bias.parse(b) for b in data.get("bias", [])])


def phantom_change(data: dict, manifest: Path) -> str:
    """Why an existing phantom no longer matches the config ('' when it does): its phantom.json differs."""
    from dataclasses import asdict

    from embedkit.data.phantom import METADATA_FILE

    meta = manifest.parent / METADATA_FILE
    if not meta.is_file():
        return f"no {METADATA_FILE} beside the manifest"
    from embedkit.runs import describe_change

    recorded, wanted = json.loads(meta.read_text()), json.loads(json.dumps(asdict(phantom_spec(data))))
    recorded = {k: recorded.get(k) for k in wanted}
    return "" if recorded == wanted else "phantom settings changed: " + describe_change(recorded, wanted)


def data_step(study):
    """The data step of ``study``: done, to run, or stale (the phantom's settings changed)."""
    from embedkit.study import Step

    data, manifest = study.config["data"], study.manifest
    change = phantom_change(data, manifest) if data["kind"] == "phantom" and manifest.is_file() else ""

    def build():
        if data["kind"] == "phantom":
            from embedkit.data.phantom import make_phantom

            return make_phantom(manifest.parent, phantom_spec(data))
        if data["kind"] == "nih":
            from embedkit.data.nih import build_nih

            return build_nih(study.resolve(data["metadata"]), manifest, images=study.resolve(data.get("images")),
                             per_group=int(data.get("per_group", 50)), seed=int(data.get("seed", 0)))
        raise EmbedkitError(f"{manifest}: manifest not found")

    def build_all():
        if not manifest.is_file() or change:
            build()
        if study.config.get("folds"):
            from embedkit.data.folds import make_folds

            make_folds(manifest, manifest.parent / "folds", k=int(study.config["folds"]), seed=int(data.get("seed", 0)))

    done = all(m.is_file() for _, m in study.rounds) and manifest.is_file() and not change
    return Step("data", f"{data['kind']} → {manifest}", "stale" if change else "done" if done else "to run", 5.0,
                build_all, change)
