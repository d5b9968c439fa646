"""End to end on the phantom: a planted bias is found, and no bias is not flagged (beyond the nominal rate)."""

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression

from embedkit.data.phantom import Bias, PhantomSpec, make_phantom
from embedkit.manifest import read_manifest
from embedkit.metrics import evaluate


def fit_and_evaluate(tmp_path, seed, bias):
    m = read_manifest(make_phantom(tmp_path / f"p{seed}", PhantomSpec(per_group=20, size=24, seed=seed, bias=bias)))
    x = np.stack([np.asarray(Image.open(m.image_path(r)), dtype=np.float32).ravel() / 255 for r in m.rows])
    y, split = m.labels(), m.column("split")
    tr, te = split != "test", split == "test"
    clf = LogisticRegression(C=0.05, max_iter=2000).fit(x[tr], y[tr])
    groups = {"sex": m.column("sex")[te], "age": m.column("age_group")[te]}
    return evaluate(y[te], clf.predict_proba(x[te]), groups=groups, order={"sex": ("M", "F"), "age": ("young", "old")},
                    classes=m.classes, n_boot=500, n_perm=200, seed=seed)


@pytest.mark.filterwarnings("ignore")
def test_planted_sex_bias_is_found_and_absent_bias_is_not_flagged(tmp_path):
    biased = fit_and_evaluate(tmp_path / "b", 0, [Bias("sex", "F", 0.9)])
    assert biased["fairness"]["sex"]["f1_gap"] > 0 and biased["significant"]["sex"]["f1_gap"]
    assert biased["excess"]["sex"]["f1_gap"] > 0
    flagged = [fit_and_evaluate(tmp_path / "u", seed, [])["significant"]["sex"]["f1_gap"] for seed in range(1, 6)]
    assert sum(flagged) <= 1
