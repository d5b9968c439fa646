"""Run folders: ``predictions.csv`` (``embedkit.predictions``) and ``run.json``, the same for every method, and
whether a folder holds the result a configuration asks for.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedkit.errors import EmbedkitError
from embedkit.metrics.suite import N_BOOT, N_PERM
from embedkit.predictions import PREDICTIONS, Predictions, read_predictions, write_predictions
from embedkit.spec import TASK

RECORD = "run.json"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text)
    os.replace(tmp, path)


def new_record(*, method: str, model: str, seed: int, config: dict, config_hash: str, identity: dict,
               manifest_digest: str, manifest: Path) -> dict:
    """What every run.json starts with, for heads, zero-shot and fine-tuning alike: the run's name, its
    settings and the identity digest ``run_state`` compares, and the manifest it was run on."""
    return {"method": method, "model": model, "seed": seed, "config": config, "config_hash": config_hash,
            "identity": identity, "manifest_digest": manifest_digest, "manifest": str(Path(manifest).resolve())}


def write_record(folder: Path, record: dict) -> None:
    """Write ``run.json`` last: its presence marks a finished run."""
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_write(folder / RECORD, json.dumps(record, indent=2, default=_json_default))


def read_record(folder: Path) -> dict | None:
    """The run record, or None when the run has not finished."""
    path = folder / RECORD
    return json.loads(path.read_text()) if path.is_file() else None


@dataclass
class RunState:
    """Whether a run folder holds the result a configuration asks for: done, to run, or stale (why)."""

    status: str          # done | to run | stale
    reason: str = ""

    @property
    def done(self) -> bool:
        return self.status == "done"


def run_state(folder: Path, identity: dict, *, manifest_digest: str | None = None,
              manifest_path: Path | None = None) -> RunState:
    """The one answer to "is this run done?" for heads, zero-shot and fine-tuning alike: done only when
    the finished record's digest equals the digest of ``identity`` (everything that determines the
    result). A folder written for another manifest file, or holding another task's run (multiclass, binary for
    another finding, multi-label), is refused, never overwritten; the same file with new content (a regenerated
    dataset) makes the run stale."""
    record = read_record(folder)
    if record is None:
        return RunState("to run", "not run yet")
    stored = record.get("manifest_digest")
    same_file = manifest_path is not None and record.get("manifest") == str(Path(manifest_path).resolve())
    if manifest_digest and stored and stored != manifest_digest and not same_file:
        raise EmbedkitError(f"{folder}: this run folder holds results for another manifest (digest {stored[:12]}); "
                            "give this dataset its own name with --dataset NAME (study: dataset = ...)")
    held, asked = _task_of(record.get("config", {})), _task_of(identity.get("config", {}))
    if held != asked:
        raise EmbedkitError(f"{folder}: holds a {held} run, which a {asked} run would replace; give each task its own "
                            "runs folder (--runs-dir; study: [paths] runs_dir) or dataset name (--dataset)")
    if record.get("config_hash") == config_digest(identity):
        return RunState("done")
    return RunState("stale", describe_change(record.get("identity", record.get("config", {})), identity))


def check_one_kind(runs_dir: Path, kind: str) -> None:
    """A runs folder holds runs of one kind, classes (multiclass) or findings (binary, multi-label), as its report
    and results table read it: a run of the other kind is refused before any work, not at the report."""
    findings = kind != TASK.kind
    for path in sorted(Path(runs_dir).glob(f"*/*/*/seed-*/{RECORD}")):
        try:
            held = _task_of(json.loads(path.read_text()).get("config", {}))
        except (OSError, ValueError, AttributeError):
            continue                                 # not a finished record: run_state judges that folder
        if (held != TASK.kind) != findings:
            raise EmbedkitError(f"{runs_dir}: holds {held} runs ({path.parent}); a {kind} run beside them would leave a "
                                "folder no report reads; give each task its own runs folder (--runs-dir; study: "
                                "[paths] runs_dir)")


def _task_of(config: dict) -> str:
    """What a run predicts, from its settings (``spec.Task``; absent: the paper's multiclass): 'binary (Edema)'."""
    task = config.get("task") or {}
    kind, positive = task.get("kind", TASK.kind), task.get("positive")
    return f"{kind} ({positive})" if positive else kind


def describe_change(old: dict, new: dict) -> str:
    """'epochs 150 → 100; weights changed' — what differs between two identities, shortly."""
    a, b = _flat(old), _flat(_jsonable(new))
    changes = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            short = k.rsplit("/", 1)[-1]
            if "digest" in short or "key" in short or k in ("weights", "manifest", "cache"):
                changes.append(f"{short.replace('_digest', '')} changed")
            else:
                changes.append(f"{k.replace('/', '.')} {a.get(k, '—')} → {b.get(k, '—')}")
    return "; ".join(changes[:4]) or "finished under another version"


def _flat(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}/{k}" if prefix else str(k)))
    return out


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=_json_default))


def config_digest(obj) -> str:
    """A short stable hash of a configuration (finished runs with the same digest are skipped)."""
    import hashlib

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=_json_default).encode()).hexdigest()[:16]


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.ndarray,)):
        return obj.tolist()
    if isinstance(obj, (Path, tuple)):
        return str(obj) if isinstance(obj, Path) else list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def evaluate_predictions(p: Predictions, *, attributes=None, split: str = "test", n_boot: int = N_BOOT,
                         n_perm: int = N_PERM, seed: int = 0, return_replicates: bool = False,
                         threshold: str = TASK.threshold, threads: int | None = None) -> dict:
    """The metrics object of a run (``embedkit.metrics.suite``; binary and multi-label findings:
    ``metrics.findings``, each finding's threshold chosen by ``threshold`` on the validation rows) on one split,
    for the declared ``attributes`` (text like 'sex,age:60,race' or parsed; default sex, age and their
    intersection), resampling patients when the predictions carry ``patient_id``, ``threads`` blocks of
    replicates at once (None: a core each where there are several)."""
    from embedkit.attributes import check_columns
    from embedkit.metrics import evaluate

    attrs, notes = _available(_declared(attributes), p.attributes, default=attributes is None)
    check_columns(attrs, p.attributes, str(p.source or "predictions"))
    s = p.select(split)
    groups = {a.name: a.labels(s.attributes) for a in attrs}
    order = {a.name: a.order(groups[a.name]) for a in attrs}
    for name, labels in groups.items():
        if (labels == "").any():
            notes.append(f"attribute {name}: {int((labels == '').sum())} of {len(labels)} rows have no value and are "
                         "left out of its groups")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if p.truth is not None:
            result = _evaluate_findings(p, s, groups, order, threshold, n_boot=n_boot, n_perm=n_perm, seed=seed,
                                        return_replicates=return_replicates, threads=threads)
        else:
            result = evaluate(s.y_true(), s.proba, groups=groups, order=order, classes=s.classes, n_boot=n_boot,
                              n_perm=n_perm, seed=seed, return_replicates=return_replicates, patient_id=s.patient_id,
                              threads=threads)
    result["warnings"] = sorted({str(w.message) for w in caught} | set(notes))
    for a in attrs:
        result["settings"]["attributes"][a.name] |= _declaration(a)
    return result


def _evaluate_findings(p: Predictions, s: Predictions, groups, order, rule: str, **kw) -> dict:
    """Finding metrics of ``s``, each finding's threshold chosen by ``rule`` on the validation rows of ``p``."""
    from embedkit.metrics.findings import evaluate_findings
    from embedkit.metrics.ranking import choose_threshold

    if not (p.split == "val").any():
        raise EmbedkitError("the predictions have no 'val' rows: a finding's threshold is chosen on validation only")
    val = p.select("val")
    thresholds = [choose_threshold(val.truth[:, f], val.proba[:, f], rule) for f in range(len(p.classes))]
    result = evaluate_findings(s.truth, s.proba, findings=s.classes, thresholds=thresholds, groups=groups, order=order,
                               patient_id=s.patient_id, **kw)
    result["settings"]["threshold_rule"] = rule
    return result


def _declaration(a) -> dict:
    """What an attribute's metrics were computed for: its columns and their cut points."""
    return {"columns": list(a.columns), "cuts": [list(c) if c is not None else None for c in a.cuts]}


def _available(attrs: tuple, columns: dict, *, default: bool) -> tuple[tuple, list[str]]:
    """The default declaration keeps only the attributes the data has values for (a dataset without age works
    for sex), saying which it left out; a declaration the user wrote is kept whole (a missing column is an error)."""
    if not default:
        return attrs, []
    has = lambda c: c in columns and (np.asarray(columns[c]).astype(str) != "").any()  # noqa: E731
    kept = tuple(a for a in attrs if all(has(c) for c in a.columns))
    return kept, [f"attribute {a.name}: left out of the default declaration (the data has no {'/'.join(a.columns)} "
                  "values)" for a in attrs if a not in kept]


def _declared(attributes) -> tuple:
    """Parsed attributes from a declaration (text, or None for the default), or as given when parsed."""
    from embedkit.attributes import parse

    return attributes if isinstance(attributes, tuple) else parse(attributes)


def finish_run(folder: Path, predictions: Predictions, record: dict, *, attributes=None, n_boot: int = N_BOOT,
               seed: int = 0, threshold: str = TASK.threshold) -> dict:
    """Write predictions, compute the test metrics into the record, write ``run.json`` last; returns the record."""
    write_predictions(folder / PREDICTIONS, predictions)
    record = dict(record, metrics=evaluate_predictions(predictions, attributes=attributes, split="test", n_boot=n_boot,
                                                       n_perm=n_boot, seed=seed, threshold=threshold))
    write_record(folder, record)
    return record


def refresh_metrics(folder: Path, attributes, *, n_boot: int = N_BOOT, seed: int = 0,
                    threshold: str = TASK.threshold) -> dict:
    """A finished run's record with its metrics recomputed when the declared attributes differ from those
    its metrics used — other names, columns or cut points — or the statistics changed version (no refit:
    predictions keep every attribute column)."""
    from embedkit.metrics.suite import STATS_VERSION

    record = read_record(folder)
    declared = {a.name: _declaration(a) for a in _declared(attributes)}
    settings = record.get("metrics", {}).get("settings", {})
    have = settings.get("attributes", {})
    dropped = attributes is None and set(have) < set(declared)      # the default, less what the data lacks
    same_rule = settings.get("threshold_rule", threshold) == threshold
    if (settings.get("version") == STATS_VERSION and same_rule and (list(have) == list(declared) or dropped)
            and all({k: have[n].get(k) for k in d} == d for n, d in declared.items() if n in have)):
        return record
    record["metrics"] = evaluate_predictions(read_predictions(folder / PREDICTIONS), attributes=attributes, split="test",
                                             n_boot=n_boot, n_perm=n_boot, seed=seed, threshold=threshold)
    write_record(folder, record)
    return record
