import json

import numpy as np
import pytest

from embedkit.cli.app import main
from embedkit.errors import EmbedkitError
from embedkit.runs import Predictions, evaluate_predictions, read_predictions, write_predictions


def make_predictions(n_per_cell=5):
    rng = np.random.default_rng(0)
    classes = ("Edema", "Effusion", "Pneumothorax")
    label = np.repeat(classes, 4 * n_per_cell)
    sex = np.tile(np.repeat(["M", "F"], 2 * n_per_cell), 3)
    age = np.tile(np.repeat([30, 70, 30, 70], n_per_cell), 3)
    proba = rng.dirichlet(np.ones(3), len(label))
    split = np.where(np.arange(len(label)) % 5 == 0, "val", "test")
    return Predictions(np.array([f"i{i}" for i in range(len(label))]), split, label, sex, age, proba, classes)


def test_round_trip_and_evaluate_cli(tmp_path, capsys):
    p = make_predictions()
    write_predictions(tmp_path / "predictions.csv", p)
    q = read_predictions(tmp_path / "predictions.csv")
    assert q.classes == p.classes and (q.label == p.label).all()
    np.testing.assert_allclose(q.proba, p.proba, rtol=1e-6)
    assert main(["evaluate", str(tmp_path / "predictions.csv"), "--json", "--n-boot", "50", "--n-perm", "50"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == evaluate_predictions(q, n_boot=50, n_perm=50)
    assert {"n", "accuracy", "f1", "f1_macro", "var_f1", "groups", "fairness", "ci", "null"} <= set(out)
    assert out["n"] == 48 and set(out["fairness"]) == {"sex", "age", "sex_age"}
    assert main(["evaluate", str(tmp_path / "predictions.csv"), "--n-boot", "20", "--n-perm", "20"]) == 0
    assert "fairness gaps" in capsys.readouterr().out


def test_bad_predictions_file(tmp_path):
    (tmp_path / "p.csv").write_text("image_id,split\n")
    with pytest.raises(EmbedkitError, match="not a predictions file"):
        read_predictions(tmp_path / "p.csv")
    with pytest.raises(EmbedkitError, match="no rows with split 'train'"):
        make_predictions().select("train")
