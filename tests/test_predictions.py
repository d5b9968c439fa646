"""The predictions file: both readers (pyarrow's columns, and the row reader that names what is wrong) give the
same predictions, and every malformed file one error naming its line and column."""

import json

import numpy as np
import pytest

from embedkit import predictions
from embedkit.errors import EmbedkitError
from embedkit.predictions import Predictions, read_predictions, write_predictions


def _findings(n=40, seed=0):
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, 3)) < 0.3).astype(float)
    truth[rng.random((n, 3)) < 0.1] = np.nan
    return Predictions(np.array([f"img,{i}" for i in range(n)]), rng.choice(["val", "test"], n), None,
                       rng.random((n, 3)), ("Edema", "No Finding", "Mass"),
                       {"sex": rng.choice(["M", "F", ""], n), "race": rng.choice(["a b", "c"], n)},
                       np.array([f"p{i // 2}" for i in range(n)]), truth)


def _classes(n=30, seed=1):
    rng = np.random.default_rng(seed)
    classes = ("Edema", "Effusion")
    return Predictions(np.array([f"i{i}" for i in range(n)]), np.array(["test"] * n), rng.choice(classes, n),
                       rng.dirichlet(np.ones(2), n), classes, {"age": rng.integers(20, 90, n).astype(str)})


def _same(a: Predictions, b: Predictions) -> None:
    assert a.classes == b.classes and set(a.attributes) == set(b.attributes)
    for name in ("image_id", "split", "label", "patient_id"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None and y is None) or (x.dtype == y.dtype and np.array_equal(x, y))
    np.testing.assert_array_equal(a.proba, b.proba)
    if a.truth is not None:
        np.testing.assert_array_equal(a.truth, b.truth)
    for k in a.attributes:
        assert a.attributes[k].dtype == b.attributes[k].dtype and np.array_equal(a.attributes[k], b.attributes[k])


@pytest.mark.parametrize("make", [_findings, _classes])
def test_both_readers_give_the_written_predictions(make, tmp_path, monkeypatch):
    p = make()
    write_predictions(tmp_path / "predictions.csv", p)
    monkeypatch.setattr(predictions, "COLUMNS_FROM", 0)             # pyarrow's columns, whatever the size
    header = (tmp_path / "predictions.csv").read_text().splitlines()[0].split(",")
    assert predictions._read_columns(tmp_path / "predictions.csv", header) is not None     # no fallback here
    fast = read_predictions(tmp_path / "predictions.csv")
    monkeypatch.setattr(predictions, "_read_columns", lambda path, header: None)
    rows = read_predictions(tmp_path / "predictions.csv")
    _same(fast, rows)
    np.testing.assert_allclose(fast.proba, p.proba, rtol=1e-6)
    if p.truth is not None:
        np.testing.assert_array_equal(fast.truth, p.truth)
    assert list(fast.image_id) == list(p.image_id) and fast.attributes["sex" if p.truth is not None else "age"].dtype.kind == "U"


def _file(tmp_path, text):
    path = tmp_path / "predictions.csv"
    path.write_text(text)
    return path


HEAD = "image_id,split,sex,true_A,true_B,prob_A,prob_B\n"


@pytest.mark.parametrize("text, error", [
    (HEAD + "a,test,M,1,0,0.5,0.2\nb,test,F,2,0,0.5,0.2\n", "line 3, column 'true_A': '2' is not 1, 0 or empty"),
    (HEAD + "a,test,M,1,0,high,0.2\n", "line 2, column 'prob_A': 'high' is not a number"),
    (HEAD + "a,test,M,1,0,,0.2\n", "line 2, column 'prob_A': '' is not a number"),
    (HEAD + "a,test,M,1,0,0.5,0.2\nb,test,F,1,0,0.5\n", "line 3: 7 fields expected"),
    (HEAD, "has a header but no rows"),
    ("image_id,split,true_A,true_B,prob_A\na,test,1,0,0.5\n", "not a findings predictions file (missing prob_B)"),
    ("image_id,split,label,pred,prob_x\na,test,y,x,0.5\n", "label(s) y have no prob_ column"),
    ("image_id,split,label,pred,prob_x\na,test,x,x,NA\n", "line 2, column 'prob_x': 'NA' is not a number"),
    ("image_id,split,pred,prob_x\na,test,x,1\n", "not a predictions file (missing label); it needs image_id, split, "
                                                  "label and prob_<class> per class (optional: patient_id"),
    ("image_id,split,label\na,test,x\n", "not a predictions file (missing prob_<class> columns)"),
])
def test_a_malformed_file_is_named_with_its_line_and_column(tmp_path, monkeypatch, text, error):
    monkeypatch.setattr(predictions, "COLUMNS_FROM", 0)             # the columns first: they defer to the rows
    with pytest.raises(EmbedkitError, match=error.replace("(", r"\(").replace(")", r"\)")):
        read_predictions(_file(tmp_path, text))


def test_what_the_row_reader_accepts_is_read_the_same(tmp_path, monkeypatch):
    """Cells pyarrow will not parse (spaces around a truth or a number, 'nan') reach the row reader, not an error."""
    monkeypatch.setattr(predictions, "COLUMNS_FROM", 0)
    p = read_predictions(_file(tmp_path, HEAD + "a,test,M, 1,0.0, 0.5,nan\nb,val,F,,1.0,1e-3,0.25\n"))
    np.testing.assert_array_equal(p.truth, [[1, 0], [np.nan, 1]])
    np.testing.assert_array_equal(p.proba, [[0.5, np.nan], [1e-3, 0.25]])


def test_the_file_is_written_as_documented(tmp_path):
    """Seven significant digits, truths as 1, 0 or empty, text quoted as csv quotes it, rows ending in CRLF."""
    findings = Predictions(np.array(["a,1", "b"]), np.array(["test", "val"]), None,
                           np.array([[0.123456789, 1.0], [1e-9, 0.5]]), ("A", "B"), {"sex": np.array(["M", 'F"x'])},
                           np.array(["p1", "p2"]), np.array([[1.0, np.nan], [0.0, 1.0]]))
    write_predictions(tmp_path / "f.csv", findings)
    assert (tmp_path / "f.csv").read_bytes().decode() == (
        'image_id,patient_id,split,sex,true_A,true_B,prob_A,prob_B\r\n'
        '"a,1",p1,test,M,1,,0.1234568,1\r\nb,p2,val,"F""x",0,1,1e-09,0.5\r\n')
    classes = Predictions(np.array(["a", "b"]), np.array(["test", "test"]), np.array(["y", "x"]),
                          np.array([[0.25, 0.75], [2 / 3, 1 / 3]]), ("x", "y"), {"age": np.array(["40", ""])})
    write_predictions(tmp_path / "c.csv", classes)
    assert (tmp_path / "c.csv").read_bytes().decode() == (
        "image_id,split,label,age,pred,prob_x,prob_y\r\na,test,y,40,y,0.25,0.75\r\nb,test,x,,x,0.6666667,0.3333333\r\n")


def test_a_file_made_elsewhere_needs_no_pred_column(tmp_path):
    """A model of one's own: image_id, split, label and the probabilities are enough (pred is argmax, derived)."""
    text = "image_id,split,label,sex,prob_x,prob_y\na,test,y,M,0.25,0.75\nb,test,x,F,0.6,0.4\n"
    p = read_predictions(_file(tmp_path, text))
    assert p.classes == ("x", "y") and p.label.tolist() == ["y", "x"]
    np.testing.assert_array_equal(p.proba, [[0.25, 0.75], [0.6, 0.4]])


def test_a_run_folder_stands_for_its_predictions_file(tmp_path, capsys):
    from embedkit.cli.app import main

    run = tmp_path / "runs/d/m/linear/seed-0"
    run.mkdir(parents=True)
    text = "image_id,split,label,sex,prob_x,prob_y\n" + "".join(f"i{i},test,{'xy'[i % 2]},{'MF'[i // 2 % 2]},0.6,0.4\n"
                                                                for i in range(40))
    (run / "predictions.csv").write_text(text)
    assert read_predictions(run).image_id.tolist() == read_predictions(run / "predictions.csv").image_id.tolist()
    assert main(["evaluate", str(run), "--n-boot", "10", "--n-perm", "10"]) == 0      # no age: scored by sex, as the API
    assert f"{run} (test, n = 40)" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--attributes", "sex,age"]) == 2                 # declared: the file is named
    assert f"{run / 'predictions.csv'}: no column 'age' for --attributes" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--split", "val"]) == 2
    assert f"{run / 'predictions.csv'}: no rows with split 'val'; it has test" in capsys.readouterr().err
    with pytest.raises(EmbedkitError, match=r"runs: not a run folder \(no predictions.csv\); give a run's folder"):
        read_predictions(tmp_path / "runs")


@pytest.mark.parametrize("columns_from", [0, 10**9])
def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path, monkeypatch, columns_from):
    monkeypatch.setattr(predictions, "COLUMNS_FROM", columns_from)      # pyarrow's reader, then the row reader
    path = tmp_path / "p.csv"
    path.write_bytes(b"\xef\xbb\xbf" + b"image_id,split,label,prob_x,prob_y\na,test,y,0.25,0.75\n")
    assert read_predictions(path).image_id.tolist() == ["a"]


@pytest.mark.parametrize("make", [_findings, _classes])
def test_a_dataframe_gives_the_predictions_of_the_csv_it_writes(make, tmp_path):
    """Your own model's outputs straight from a notebook: the frame read back from the CSV pandas writes of it
    (missing truth empty) is the same predictions as that file, and evaluates to the same numbers."""
    import pandas as pd

    import embedkit

    write_predictions(tmp_path / "predictions.csv", make())
    frame = pd.read_csv(tmp_path / "predictions.csv", keep_default_na=False, na_values={
        c: [""] for c in pd.read_csv(tmp_path / "predictions.csv", nrows=0).columns if c.startswith("true_")})
    from_file, from_frame = read_predictions(tmp_path / "predictions.csv"), read_predictions(frame)
    _same(from_file, from_frame)
    assert from_frame.source == "the DataFrame"
    args = dict(attributes="sex" if from_file.truth is not None else "age", n_boot=30, n_perm=30)
    a, b = embedkit.evaluate(tmp_path / "predictions.csv", **args), embedkit.evaluate(frame, **args)
    assert json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def test_a_dataframe_is_checked_as_a_file_is_naming_the_row():
    import pandas as pd

    good = {"image_id": ["a", "b"], "split": ["test", "test"], "true_Edema": [1.0, None], "prob_Edema": [0.9, 0.2]}
    assert read_predictions(pd.DataFrame(good)).truth[:, 0].tolist()[0] == 1.0
    bad = [({**good, "prob_Edema": [0.9, "high"]}, "the DataFrame, row 1, column 'prob_Edema': 'high' is not a number"),
           ({**good, "true_Edema": [2, 0]}, "the DataFrame, row 0, column 'true_Edema': '2' is not 1, 0 or empty"),
           ({k: v for k, v in good.items() if k != "prob_Edema"}, "the DataFrame: not a findings predictions file"),
           ({k: [] for k in good}, "the DataFrame: has columns but no rows")]
    for table, message in bad:
        with pytest.raises(EmbedkitError, match=message.replace("(", r"\(")):
            read_predictions(pd.DataFrame(table))
    assert read_predictions(pd.DataFrame({**good, "true_Edema": [True, False]})).truth[:, 0].tolist() == [1.0, 0.0]
