"""`embedkit study`: the whole study from one TOML file — data, extraction, cache-path experiments,
fine-tuning, report — skipping what is already done, so a rerun after a crash (or after adding a
model) does only the missing work. ``schema`` checks the file, ``config`` reads it, ``plan`` lists the
steps (``data`` builds the dataset), ``run`` runs them. A failed step is logged (``<runs>/study.log``)
and reported at the end; the other steps still run.
"""

from embedkit.study.config import Study, load_study
from embedkit.study.plan import plan
from embedkit.study.run import run_study
from embedkit.study.steps import Step

__all__ = ["Study", "Step", "load_study", "plan", "run_study"]
