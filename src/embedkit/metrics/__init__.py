"""Utility and fairness metrics: numpy (compiled loops for resampled statistics in ``kernels``), importable
without torch.

- ``classification``: accuracy, per-class F1, TPR/FPR, ECE — from (y_true, y_pred/proba).
- ``fairness``: var F1, F1 gap, equalized odds, ECE gap, with keyword-only groups.
- ``suite``: ``evaluate``, every metric of a run plus bootstrap CIs, permutation p-values and the noise floor.
"""

from embedkit.metrics.classification import accuracy, ece, ece_binned, f1_per_class, rates_per_class
from embedkit.metrics.suite import aggregate_seeds, evaluate
from embedkit.metrics.fairness import ece_binned_gap, ece_gap, eqodds, f1_gap, var_f1

__all__ = ["accuracy", "ece", "ece_binned", "f1_per_class", "rates_per_class", "var_f1", "f1_gap", "eqodds", "ece_gap",
           "ece_binned_gap", "evaluate", "aggregate_seeds"]
