"""Run a study's plan: every step that is not done, in stage order, a failure logged and the rest run on."""

from __future__ import annotations

import logging
import time
import traceback
from typing import Callable

from embedkit.study.config import Study
from embedkit.study.plan import plan
from embedkit.study.steps import Step

log = logging.getLogger("embedkit.study")


def run_study(study: Study, *, on_step: Callable[[Step, str], None] | None = None) -> list[Step]:
    """Run every step that is not done; returns the steps (``error`` set on the failed ones)."""
    runs = study.paths["runs_dir"]
    runs.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(runs / "study.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        steps = []
        for stage in ("data", "extract", "rest"):
            # later stages are planned once the manifest and caches exist
            current = plan(study)
            todo = [s for s in current if (s.stage == stage if stage != "rest" else s.stage not in ("data", "extract"))]
            for step in todo:
                steps.append(step)
                if step.done:
                    log.info("skip (done) %s: %s", step.stage, step.name)
                    if on_step:
                        on_step(step, "skipped")
                    continue
                log.info("start %s: %s", step.stage, step.name)
                if on_step:
                    on_step(step, "started")
                t0 = time.perf_counter()
                try:
                    step.run()
                    status = "finished"
                except Exception as exc:  # recorded, reported at the end; the other steps go on
                    step.error = f"{type(exc).__name__}: {exc}"
                    log.error("failed %s: %s\n%s", step.stage, step.name, traceback.format_exc())
                    status = "failed"
                    if stage in ("data",):
                        return steps
                step.seconds = time.perf_counter() - t0
                log.info("%s %s: %s (%.1f s)", status, step.stage, step.name, step.seconds)
                if on_step:
                    on_step(step, status)
        return steps
    finally:
        log.removeHandler(handler)
        handler.close()
