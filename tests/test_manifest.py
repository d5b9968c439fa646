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
    from embedkit.manifest import _read_columns

    second = GOOD | {"image_id": "b", "patient_id": "p2"} | change
    path = write(tmp_path, [GOOD, second])
    assert _read_columns(path, ("Edema", "Effusion")) is None      # the columnar reader hands every problem over
    with pytest.raises(EmbedkitError) as err:
        read_manifest(path, classes=("Edema", "Effusion"))
    assert message in str(err.value)


@pytest.mark.parametrize("text, columnar", [
    ("image_id,path,patient_id,label,sex,age,split,site\n"            # normalised: spaces, '60.0', empty optional values
     "a,a.png,p1,Edema, M ,60.0,train,A\nb,b.png,p2,Effusion,,,val,\n\nc,\"c,1.png\",p3,\"Ede\nma\",F, 7 ,test,B\n", True),
    ("image_id,path,patient_id,label,split\na,a.png,p1,Edema,train\nb,b.png,p1,Edema,train\n", True),   # no sex, age
    ("image_id,path,patient_id,label,sex,age,split\na,a.png,p1,Edema,M,61,train\nb,b.png,p2,Edema,F\n", False),  # short
    ("image_id,path,patient_id,label,sex,age,split\na,a.png,p1,Edema,M,1_0,train\n", False),    # Python reads 1_0 as 10
])
def test_columnar_and_row_readers_give_the_same_manifest(tmp_path, text, columnar):
    from embedkit.manifest import OPTIONAL, _read_columns, _read_rows

    path = tmp_path / "m.csv"
    path.write_text(text)
    try:
        rows, header = _read_rows(path, None)
    except EmbedkitError as exc:
        assert _read_columns(path, None) is None
        with pytest.raises(EmbedkitError, match=str(exc).split(": ", 1)[1][:30]):
            read_manifest(path)
        return
    fast = _read_columns(path, None)
    assert (fast is not None) == columnar
    expected = {c: [r.get(c, "") for r in rows] for c in (*header, *(c for c in OPTIONAL if c not in header))}
    if fast is not None:                                       # None: handed over; the row reader's result stands
        assert {c: list(v) for c, v in fast.items()} == expected
    m = read_manifest(path)
    assert {c: list(v) for c, v in m.table.items()} == expected and m.rows == [dict(zip(expected, v)) for v in
                                                                              zip(*expected.values())]


def test_missing_column_and_missing_files(tmp_path):
    with pytest.raises(EmbedkitError, match="missing column.*label"):
        read_manifest(write(tmp_path, [GOOD], columns=[c for c in COLUMNS if c != "label"]))
    with pytest.raises(EmbedkitError, match=r"1 image file\(s\) missing: line 2: a.png"):
        read_manifest(write(tmp_path, [GOOD]), check_files=True)
    with pytest.raises(EmbedkitError, match="manifest not found"):
        read_manifest(tmp_path / "nope.csv")
    with pytest.raises(EmbedkitError, match="no column 'race' for --attributes; columns there: age, extra, sex"):
        read_manifest(write(tmp_path, [GOOD]), attributes="sex,age:60,race")
    assert len(read_manifest(write(tmp_path, [GOOD]), attributes="sex*age")) == 1


def test_digest_changes_with_any_row(tmp_path):
    a = read_manifest(write(tmp_path, [GOOD])).digest()
    b = read_manifest(write(tmp_path, [GOOD | {"age": "62"}])).digest()
    assert a != b and len(a) == 64


def test_a_manifest_without_age_and_with_unknown_sex_works_for_what_it_has(tmp_path):
    """sex and age are attributes, not requirements: each leaves out the rows it has no value for."""
    import numpy as np

    from embedkit.predictions import Predictions
    from embedkit.runs import evaluate_predictions

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


@pytest.mark.parametrize("columnar", [True, False])
def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path, monkeypatch, columnar):
    """Excel's 'CSV UTF-8' starts the file with a BOM: the manifest reads the same through either reader."""
    from embedkit import manifest

    plain = write(tmp_path, [GOOD, GOOD | {"image_id": "b", "path": "b.png", "split": "val", "patient_id": "p2"}])
    marked = tmp_path / "bom.csv"
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    if not columnar:
        monkeypatch.setattr(manifest, "_read_columns", lambda *a: None)
    a, b = read_manifest(plain), read_manifest(marked)
    assert list(b.table) == list(a.table) and b.digest() == a.digest() and b.table["image_id"].tolist() == ["a", "b"]
