"""What is predicted, declared as data (like ``attributes``): the task kind, its findings, and the rule that
chooses each finding's threshold on validation.

- ``multiclass``: one class per image among C (the paper's; a manifest's ``label`` is the class);
- ``binary``: one finding against the rest (``positive = "Effusion"``), or ``positive = "No Finding"``
  against any finding;
- ``multilabel``: several findings per image. A manifest's ``label`` lists an image's findings separated by
  ``|`` (NIH's convention, ``Effusion|Infiltration``; ``No Finding`` for none), and an optional ``masked``
  column lists, the same way, the findings that are uncertain or unlabelled for that image: masked (NaN) in
  the targets, never counted negative.

Targets are (N, F) floats: 1, 0, or NaN (masked). With ``No Finding`` among the findings its target is 1
for an image with no finding, 0 for one with a finding, NaN when it has none but some are masked.
"""

from __future__ import annotations

import numpy as np

from embedkit.errors import EmbedkitError
from embedkit.spec import TASK, Task

KINDS = ("multiclass", "binary", "multilabel")
NO_FINDING = "No Finding"
SEPARATOR = "|"
MASKED_COLUMN = "masked"
FINDING_METHODS = ("zeroshot", "linear", "mlp", "knn", "lora", "full")     # the methods that predict findings


def findings_of(text: str) -> list[str]:
    """'Effusion|Edema' -> ['Effusion', 'Edema']; '' and 'No Finding' -> []."""
    return [f.strip() for f in str(text).split(SEPARATOR) if f.strip() and f.strip() != NO_FINDING]


def check(task: Task) -> Task:
    """A task that makes sense, else a clear error naming the option."""
    from embedkit.metrics.ranking import check_rule

    if task.kind not in KINDS:
        raise EmbedkitError(f"--task {task.kind!r}: choose {', '.join(KINDS)}")
    if task.kind == "binary" and not task.positive:
        raise EmbedkitError("--task binary needs --positive FINDING (or --positive 'No Finding')")
    if task.kind != "binary" and task.positive:
        raise EmbedkitError("--positive is for --task binary")
    if task.kind == "multiclass" and task.findings:
        raise EmbedkitError("--findings is for --task binary or multilabel")
    check_rule(task.threshold)
    return task


def parse(kind: str = TASK.kind, findings: str | None = None, positive: str | None = None,
          threshold: str = TASK.threshold) -> Task:
    """A task from its CLI/study spelling: findings comma-separated."""
    listed = tuple(f.strip() for f in findings.split(",") if f.strip()) if findings else None
    return check(Task(kind=kind, findings=listed, positive=positive or None, threshold=threshold))


def findings_for(task: Task, labels, masked=None, *, where: str = "manifest") -> tuple[str, ...]:
    """The findings ``task`` predicts on these rows: its positive, its declared findings (each listed by some row),
    or every finding the rows list."""
    return _named(task, [findings_of(v) for v in labels],
                  [findings_of(v) for v in masked] if masked is not None else [], where)


def _named(task: Task, rows: list[list[str]], masks: list[list[str]], where: str) -> tuple[str, ...]:
    if task.kind == "multiclass":
        raise ValueError("a multiclass task has class indices, not finding targets")
    seen = sorted({f for r in rows for f in r} | {f for m in masks for f in m})
    names = (task.positive,) if task.kind == "binary" else task.findings or tuple(seen)
    unknown = [f for f in names if f != NO_FINDING and f not in seen]
    if unknown:
        raise EmbedkitError(f"{where}: finding(s) {', '.join(unknown)} appear in no row's label; found: "
                            f"{', '.join(seen) or 'none'}")
    return tuple(names)


def targets(task: Task, labels, masked=None, *, where: str = "manifest") -> tuple[tuple[str, ...], np.ndarray]:
    """(findings, (N, F) targets) of the rows' ``label`` (and ``masked``) values under ``task``."""
    rows = [findings_of(v) for v in labels]
    masks = [findings_of(v) for v in masked] if masked is not None else [[] for _ in rows]
    names = _named(task, rows, masks, where)
    out = np.zeros((len(rows), len(names)))
    for i, (pos, mask) in enumerate(zip(rows, masks)):
        for j, f in enumerate(names):
            if f == NO_FINDING:
                out[i, j] = 0.0 if pos else (np.nan if mask else 1.0)
            else:
                out[i, j] = np.nan if f in mask else float(f in pos)
    return names, out


def check_multiclass(labels, *, where: str = "manifest") -> None:
    """A multiclass run refuses labels that list several findings (the manifest is multi-label)."""
    several = [i for i, v in enumerate(labels) if SEPARATOR in str(v)]
    if several:
        raise EmbedkitError(f"{where}: row {several[0] + 1} (and {len(several) - 1} more) list several findings "
                            f"({labels[several[0]]!r}); give --task multilabel, or --task binary --positive FINDING")
