"""The study's data step: build (or rebuild) the dataset its config describes — the phantom, regenerated
when its settings change, or the NIH subset — and the cross-validation folds."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Callable

from embedkit.data.phantom import PhantomSpec
from embedkit.errors import EmbedkitError
from embedkit.study.steps import Step


def phantom_spec(data: dict):
    """The phantom a [data] table describes; PhantomSpec's own defaults for what it leaves out."""
    from embedkit.data.phantom import Bias

    keys = {f.name for f in fields(PhantomSpec)} - {"classes", "bias", "generator"}
    return PhantomSpec(**{k: data[k] for k in keys if k in data}, bias=[Bias.parse(b) for b in data.get("bias", [])])


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


def _phantom(study, manifest: Path, data: dict) -> Path:
    from embedkit.data.phantom import make_phantom

    return make_phantom(manifest.parent, phantom_spec(data))


def _nih(study, manifest: Path, data: dict) -> Path:
    from embedkit.data.nih import build_nih

    given = {k: data[k] for k in ("per_group", "seed") if k in data}      # else build_nih's own defaults
    return build_nih(study.resolve(data["metadata"]), manifest, images=study.resolve(data.get("images")), **given)


def _given(study, manifest: Path, data: dict) -> Path:
    raise EmbedkitError(f"{manifest}: manifest not found")


# [data] kind -> how the study builds its manifest (study, manifest path, the [data] table) -> the manifest;
# a dataset kind registered here is a valid `kind` of the study schema at once
KINDS: dict[str, Callable[[object, Path, dict], Path]] = {"phantom": _phantom, "nih": _nih, "manifest": _given}


def data_step(study):
    """The data step of ``study``: done, to run, or stale (the phantom's settings changed)."""
    data, manifest = study.config["data"], study.manifest
    change = phantom_change(data, manifest) if data["kind"] == "phantom" and manifest.is_file() else ""

    def build_all():
        if not manifest.is_file() or change:
            KINDS[data["kind"]](study, manifest, data)
        if study.config.get("folds"):
            from embedkit.data.folds import make_folds

            seed = {"seed": data["seed"]} if "seed" in data else {}
            make_folds(manifest, manifest.parent / "folds", k=int(study.config["folds"]), **seed)

    done = all(m.is_file() for _, m in study.rounds) and manifest.is_file() and not change
    return Step("data", f"{data['kind']} → {manifest}", "stale" if change else "done" if done else "to run", 5.0,
                build_all, change)
