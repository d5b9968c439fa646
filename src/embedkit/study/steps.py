"""A study's steps: what each runs, whether it is done (the runs' own answer, ``runs.run_state``), and why a
step is stale."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass
class Step:
    stage: str                       # data | extract | experiments | finetune | report
    name: str
    status: str                      # done | to run | stale
    estimate_s: float
    run: Callable[[], object]
    reason: str = ""                 # why a step is stale ("epochs 150 → 100", "weights changed")
    error: str | None = None
    seconds: float = 0.0

    @property
    def done(self) -> bool:
        return self.status == "done"


def combine(states) -> tuple[str, str]:
    """One step's status from its runs' RunStates: done only when all are."""
    states = list(states)
    stale = [s for s in states if s.status == "stale"]
    if stale:
        return "stale", stale[0].reason
    return ("done", "") if all(s.done for s in states) else ("to run", "")
