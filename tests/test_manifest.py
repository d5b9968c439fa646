import csv

import pytest

from embedkit.errors import EmbedkitError
from embedkit.manifest import COLUMNS, read_manifest

GOOD = {"image_id": "a", "path": "a.png", "patient_id": "p1", "label": "Edema", "sex": "M", "age": "61", "split": "train"}


def write(tmp_path, rows, columns=COLUMNS + ("extra",)):
    path = tmp_path / "m.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def test_reads_columns_and_derived_attributes(tmp_path):
    rows = [GOOD | {"extra": "x"}, GOOD | {"image_id": "b", "patient_id": "p2", "sex": "F", "age": "59", "label": "Effusion"}]
    m = read_manifest(write(tmp_path, rows))
    assert m.classes == ("Edema", "Effusion")
    assert list(m.column("age_group")) == ["old", "young"]
    assert list(m.column("sex_age")) == ["M-old", "F-young"]
    assert list(m.labels()) == [0, 1]
    assert m.extra_columns == ("extra",)
    assert m.image_path(m.rows[0]) == tmp_path / "a.png"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"image_id": ""}, "line 3, column 'image_id': is empty"),
        ({"image_id": "a"}, "line 3, column 'image_id': duplicate 'a' (first on line 2)"),
        ({"sex": "X"}, "column 'sex': unknown sex code 'X'"),
        ({"patient_id": ""}, "column 'patient_id': is empty"),
        ({"age": "-3"}, "column 'age': '-3' is not a whole, non-negative"),
        ({"age": "old"}, "column 'age': 'old' is not a number"),
        ({"split": "dev"}, "column 'split': unknown split 'dev'"),
        ({"label": "Hernia"}, "column 'label': 'Hernia' is not one of the classes"),
        ({"patient_id": "p1", "split": "test"}, "patient 'p1' is in 'test' here but in 'train' on line 2"),
    ],
)
def test_validation_names_row_and_column(tmp_path, change, message):
    second = GOOD | {"image_id": "b", "patient_id": "p2"} | change
    with pytest.raises(EmbedkitError) as err:
        read_manifest(write(tmp_path, [GOOD, second]), classes=("Edema", "Effusion"))
    assert message in str(err.value)


def test_missing_column_and_missing_files(tmp_path):
    with pytest.raises(EmbedkitError, match="missing column.*label"):
        read_manifest(write(tmp_path, [GOOD], columns=[c for c in COLUMNS if c != "label"]))
    with pytest.raises(EmbedkitError, match=r"1 image file\(s\) missing: line 2: a.png"):
        read_manifest(write(tmp_path, [GOOD]), check_files=True)
    with pytest.raises(EmbedkitError, match="manifest not found"):
        read_manifest(tmp_path / "nope.csv")


def test_digest_changes_with_any_row(tmp_path):
    a = read_manifest(write(tmp_path, [GOOD])).digest()
    b = read_manifest(write(tmp_path, [GOOD | {"age": "62"}])).digest()
    assert a != b and len(a) == 64


def test_a_manifest_without_age_and_with_unknown_sex_works_for_what_it_has(tmp_path):
    """sex and age are attributes, not requirements: each leaves out the rows it has no value for."""
    import numpy as np

    from embedkit.runs import Predictions, evaluate_predictions

    columns = ("image_id", "path", "patient_id", "label", "sex", "split")
    rows = [GOOD | {"image_id": f"i{i}", "patient_id": f"p{i}", "sex": "" if i == 0 else "MF"[i % 2]} for i in range(4)]
    m = read_manifest(write(tmp_path, rows, columns))
    assert list(m.column("sex")) == ["", "F", "M", "F"] and list(m.column("age_group")) == [""] * 4
    rng = np.random.default_rng(0)
    n = 120
    y = np.arange(n) % 3
    sex = np.array(["", *("MF"[i % 2] for i in range(1, n))])
    p = Predictions(np.arange(n).astype(str), np.array(["test"] * n), np.array(list("ABC"))[y],
                    rng.dirichlet(np.ones(3), n), tuple("ABC"), {"sex": sex, "age": np.array([""] * n)})
    r = evaluate_predictions(p, n_boot=20, n_perm=20)
    assert list(r["fairness"]) == ["sex"]                      # the default keeps what the data has
    assert any("age: left out of the default" in w for w in r["warnings"])
    assert any("sex: 1 of 120 rows have no value" in w for w in r["warnings"])
    with pytest.raises(EmbedkitError):                         # a declaration the user wrote is kept whole
        evaluate_predictions(p, attributes="race", n_boot=20, n_perm=20)
