"""Dataset builders on small files written in each source's published format (column names, value codes)."""

import csv
import gzip

import pytest

from embedkit.cli.app import main
from embedkit.data import chexpert, csvfile, mimic, padchest
from embedkit.data.build import build
from embedkit.errors import EmbedkitError
from embedkit.manifest import read_manifest

CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *chexpert.FINDINGS]
# the real PadChest labels file's header (torchxrayvision ships the file; tests/data/test_real_metadata.py reads it)
PADCHEST_HEADER = ["", "ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth", "PatientSex_DICOM",
                   "ViewPosition_DICOM", "Projection", "MethodProjection", "Pediatric", "Modality_DICOM", "Labels",
                   "Localizations", "LabelsLocalizationsBySentence", "labelCUIS", "LocalizationsCUIS"]


def write(path, header, rows, gz=False):
    opener = (lambda: gzip.open(path, "wt", newline="")) if gz else (lambda: open(path, "w", newline=""))
    with opener() as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def chexpert_row(i, finding, sex="Female", age=68, view="Frontal", value="1.0"):
    values = {f: "" for f in chexpert.FINDINGS}
    values[finding] = value
    return [f"CheXpert-v1.0-small/train/patient{i:05d}/study1/view1_{view.lower()}.jpg", sex, str(age), view, "AP",
            *(values[f] for f in chexpert.FINDINGS)]


def test_chexpert_labels_views_uncertainty_and_race(tmp_path):
    rows = [chexpert_row(1, "Edema"), chexpert_row(2, "Pleural Effusion", "Male", 45),
            chexpert_row(3, "Edema", view="Lateral"), chexpert_row(4, "Edema", "Unknown"),
            chexpert_row(5, "Edema", value="-1.0")]
    rows[1][CHEXPERT_HEADER.index("Support Devices")] = "1.0"          # a device does not make it multi-label
    train = write(tmp_path / "train.csv", CHEXPERT_HEADER, rows)
    demo = write(tmp_path / "demo.csv", ["PATIENT", "GENDER", "AGE_AT_CXR", "PRIMARY_RACE", "ETHNICITY"],
                 [[f"patient{i:05d}", "Female", "68", race, "Non-Hispanic/Non-Latino"]
                  for i, race in enumerate(["", "White", "Black or African American", "Asian", "White", "Other"])])
    sources, notes = chexpert.read([train], demographics=demo)
    assert [s.patient_id for s in sources] == ["patient00001", "patient00002", "patient00005"]
    assert sources[1].findings["Effusion"] == 1.0 and sources[2].findings["Edema"] == -1.0
    assert sources[0].extra["race"] == "White" and any("view" in n for n in notes) and any("sex" in n for n in notes)
    assert sources[0].extra["ethnicity_group"] == "Non-Hispanic" and sources[0].extra["race_group"] == "White"
    built = build(sources, tmp_path / "m.csv", classes=("Edema", "Effusion"), uncertain="ignore")
    assert [r["label"] for r in built.rows] == ["Edema", "Effusion"] and built.dropped["uncertain label"] == 1
    ones = build(sources, tmp_path / "m1.csv", classes=("Edema", "Effusion"), uncertain="ones")
    assert len(ones.rows) == 3
    m = read_manifest(tmp_path / "m1.csv")
    assert "race" in m.extra_columns and set(m.column("sex")) == {"F", "M"}


def test_chexpert_bad_value_names_file_line_and_column(tmp_path):
    train = write(tmp_path / "train.csv", CHEXPERT_HEADER, [chexpert_row(1, "Edema", value="2.0")])
    with pytest.raises(EmbedkitError, match=r"train.csv, line 2, column 'Edema': '2.0'"):
        chexpert.read([train])


def test_mimic_joins_metadata_labels_split_patients_and_admissions(tmp_path):
    meta = write(tmp_path / "mimic-cxr-2.0.0-metadata.csv.gz",
                 ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
                  "Columns", "StudyDate", "StudyTime"],
                 [["d1", "10000032", "50414267", "CHEST (PA AND LAT)", "PA", "3056", "2544", "21800506", "213014.531"],
                  ["d2", "10000032", "50414267", "CHEST (PA AND LAT)", "LATERAL", "3056", "2544", "21800506", "213014.531"],
                  ["d3", "10000764", "57375967", "CHEST (PORTABLE AP)", "AP", "3056", "2544", "21320727", "100000"]], gz=True)
    labels = write(tmp_path / "mimic-cxr-2.0.0-chexpert.csv.gz", ["subject_id", "study_id", *sorted(chexpert.FINDINGS)],
                   [["10000032", "50414267", *("1.0" if f == "Cardiomegaly" else "" for f in sorted(chexpert.FINDINGS))],
                    ["10000764", "57375967", *("1.0" if f == "Pleural Effusion" else "0.0" for f in sorted(chexpert.FINDINGS))]],
                   gz=True)
    split = write(tmp_path / "split.csv", ["dicom_id", "study_id", "subject_id", "split"],
                  [["d1", "50414267", "10000032", "train"], ["d3", "57375967", "10000764", "validate"]])
    patients = write(tmp_path / "patients.csv", ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"],
                     [["10000032", "F", "52", "2180", "2014 - 2016", ""], ["10000764", "M", "86", "2132", "2014 - 2016", ""]])
    adm = write(tmp_path / "admissions.csv", ["subject_id", "hadm_id", "admittime", "insurance", "race"],
                [["10000032", "1", "2180-05-06", "Medicaid", "WHITE"], ["10000032", "2", "2180-06-26", "Medicaid", "WHITE"],
                 ["10000764", "7", "2133-03-01", "Medicare", "ASIAN - KOREAN"],    # grouped before counting:
                 ["10000764", "6", "2133-02-01", "Medicare", "ASIAN - CHINESE"],   # Asian 2, White 1, Black 1
                 ["10000032", "3", "2180-07-23", "Other", "UNKNOWN"], ["10000764", "5", "2133-01-02 08:00:00", "Medicare", "WHITE"],
                 ["10000764", "4", "2132-10-14 11:30:00", "Medicare", "BLACK/AFRICAN AMERICAN"]])
    sources, notes = mimic.read(meta, labels, patients, split=split, admissions=adm, images=tmp_path / "jpg")
    assert [(s.image_id, s.age, s.sex, s.split) for s in sources] == [("d1", 52, "F", "train"), ("d3", 86, "M", "val")]
    assert sources[0].extra == {"view": "PA", "race": "WHITE", "race_group": "White", "insurance": "Medicaid"}
    assert sources[1].extra == {"view": "AP", "race": "BLACK/AFRICAN AMERICAN", "race_group": "Asian", "insurance": "Medicare"}
    # four published values tied: the first admitted (by admittime), not the file's first; two of them are Asian
    assert sources[0].path.endswith("files/p10/p10000032/s50414267/d1.jpg") and notes == ["1 image(s) left out: view"]
    built = build(sources, tmp_path / "m.csv", classes=("Cardiomegaly", "Effusion"), split="official")
    assert [r["split"] for r in built.rows] == ["train", "val"]


def test_padchest_age_from_dates_findings_from_the_labels_list(tmp_path):
    def row(i, labels, sex="F", proj="PA", birth="1930.0"):
        return [str(i), f"im{i}.png", "0", "20140915", f"s{i}", f"p{i}", birth, sex, "POSTEROANTERIOR", proj,
                "Manual review of DICOM fields", "No", "CR", labels, "[]", "[]", "[]", "[]"]

    meta = write(tmp_path / "padchest.csv.gz", PADCHEST_HEADER,
                 [row(1, "['pleural effusion']"), row(2, "['cardiomegaly', 'pleural effusion']", "M"),
                  row(3, "['normal']", proj="L"), row(4, "['cardiomegaly', 'aortic elongation']"),
                  row(5, "['exclude']"), row(6, "['pneumothorax']", sex="O"), row(7, "nan")], gz=True)
    sources, notes = padchest.read(meta)
    assert [s.image_id for s in sources] == ["im1.png", "im2.png", "im4.png"] and sources[0].age == 84
    assert sources[0].path == "0/im1.png" and sources[1].sex == "M"
    assert {n.split(": ")[1] for n in notes} == {"projection", "sex", "labels", "excluded"}
    single = build(sources, tmp_path / "a.csv", classes=("Cardiomegaly", "Effusion"), policy="single")
    assert [r["label"] for r in single.rows] == ["Effusion"]       # two findings, or one outside the classes: out
    inside = build(sources, tmp_path / "b.csv", classes=("Cardiomegaly", "Effusion"), policy="single-in-classes")
    assert [r["label"] for r in inside.rows] == ["Effusion", "Cardiomegaly"]
    first = build(sources, tmp_path / "c.csv", classes=("Cardiomegaly", "Effusion"), policy="first")
    assert [r["label"] for r in first.rows] == ["Effusion", "Cardiomegaly", "Cardiomegaly"]


def _padchest_row(i, labels):
    return [str(i), f"im{i}.png", "0", "20140915", f"s{i}", f"p{i}", "1950", "F", "POSTEROANTERIOR", "PA",
            "Manual review of DICOM fields", "No", "CR", labels, "[]", "[]", "[]", "[]"]


def test_padchest_subtypes_count_as_their_class_and_near_synonyms_do_not(tmp_path):
    meta = write(tmp_path / "p.csv", PADCHEST_HEADER,
                 [_padchest_row(1, "['laminar atelectasis']"), _padchest_row(2, "['pericardial effusion']"),
                  _padchest_row(3, "['loculated pleural effusion', 'COPD signs']"), _padchest_row(4, "['hydropneumothorax']")])
    found = [s.findings for s in padchest.read(meta)[0]]
    assert (found[0]["Atelectasis"], found[0]["(other)"]) == (1.0, 0.0)
    assert (found[1]["Effusion"], found[1]["(other)"]) == (0.0, 1.0)        # the pericardium's, not the pleura's
    assert (found[2]["Effusion"], found[2]["(other)"]) == (1.0, 1.0) and found[3]["Pneumothorax"] == 1.0


def test_padchest_class_map_adds_classes_from_the_command_line(tmp_path):
    meta = write(tmp_path / "p.csv", PADCHEST_HEADER,
                 [_padchest_row(i, "['nodule']" if i % 2 else "['multiple nodules']") for i in range(40)]
                 + [_padchest_row(40 + i, "['pleural effusion']") for i in range(40)])
    assert padchest.class_map("Nodule=Nodule| multiple nodules ,Mass=mass") == {"Nodule": ("nodule", "multiple nodules"),
                                                                                "Mass": ("mass",)}
    assert main(["data", "padchest", "--metadata", str(meta), "--classes", "Nodule,Effusion", "--class-map",
                 "Nodule=nodule|multiple nodules", "--out", str(tmp_path / "m.csv")]) == 0
    assert read_manifest(tmp_path / "m.csv").column("label").tolist().count("Nodule") == 40
    with pytest.raises(EmbedkitError, match=r"--class-map 'Nodule': write Class=term"):
        padchest.class_map("Nodule")


def test_csv_maps_columns_and_keeps_the_rest(tmp_path, capsys):
    rows = [[f"f{i}.png", f"P{i // 2}", "Male" if i % 2 else "female", str(30 + i), "Edema|Effusion" if i == 0 else
             ("Edema" if i % 3 else "Effusion"), "ABC"[i % 3]] for i in range(60)]
    table = write(tmp_path / "t.csv", ["File", "Patient", "Gender", "Age", "Finding", "site"], rows)
    mapping = "path=File,patient_id=Patient,sex=Gender,age=Age,label=Finding"
    assert main(["data", "csv", "--table", str(table), "--columns", mapping, "--classes", "Edema,Effusion",
                 "--out", str(tmp_path / "m.csv")]) == 0
    m = read_manifest(tmp_path / "m.csv")
    assert len(m) == 59 and m.extra_columns == ("site",) and set(m.column("split")) == {"train", "val", "test"}
    marked = tmp_path / "bom.csv"                                 # Excel's 'CSV UTF-8' starts with a byte order mark
    marked.write_bytes(b"\xef\xbb\xbf" + table.read_bytes())
    assert main(["data", "csv", "--table", str(marked), "--columns", mapping, "--classes", "Edema,Effusion",
                 "--out", str(tmp_path / "m2.csv")]) == 0
    assert (tmp_path / "m2.csv").read_bytes() == (tmp_path / "m.csv").read_bytes()
    assert main(["data", "csv", "--table", str(table), "--columns", "pth=File", "--out", str(tmp_path / "x.csv")]) == 2
    assert "--columns 'pth=File'" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_balanced_selection_over_any_attribute(tmp_path):
    from embedkit.data.build import Source

    sources = [Source(f"i{i}", f"i{i}.png", f"p{i}", "MF"[i % 2], 40, {"A" if i % 3 else "B": 1.0},
                      extra={"site": "XYZ"[(i // 5) % 3]}) for i in range(600)]
    built = build(sources, tmp_path / "m.csv", classes=("A", "B"), balanced=10, balance_on="site")
    assert built.balanced["counts"]["A"] == {("X", "all"): 10, ("Y", "all"): 10, ("Z", "all"): 10}
    assert len(built.rows) == 60


def test_data_help_lists_every_builder(capsys):
    from embedkit.data import registry

    assert main(["data", "--help"]) == 0
    out = capsys.readouterr().out
    assert {"nih", "chexpert", "mimic-cxr", "padchest", "csv", "phantom"} <= set(registry.names())
    assert all(name in out for name in registry.names())


@pytest.mark.parametrize("raw, group", [("White, non-Hispanic", "White"), ("Black or African American", "Black"),
                                        ("Asian, Hispanic", "Asian"), ("White, Asian", "Asian"), ("Other, Hispanic", "Other"),
                                        ("Native Hawaiian or Other Pacific Islander", "Other"), ("Unknown", ""),
                                        ("Race and Ethnicity Unknown", ""), ("Patient Refused", ""), ("", "")])
def test_chexpert_race_groups(raw, group):
    assert chexpert.race_group(raw) == group


@pytest.mark.parametrize("raw, group", [("Non-Hispanic/Non-Latino", "Non-Hispanic"), ("Not Hispanic", "Non-Hispanic"),
                                        ("Hispanic/Latino", "Hispanic"), ("Hispanic", "Hispanic"), ("Unknown", ""),
                                        ("Patient Refused", ""), ("", "")])
def test_chexpert_ethnicity_groups(raw, group):
    assert chexpert.ethnicity_group(raw) == group


@pytest.mark.parametrize("raw, group", [("WHITE - OTHER EUROPEAN", "White"), ("BLACK/CAPE VERDEAN", "Black"),
                                        ("HISPANIC/LATINO - PUERTO RICAN", "Hispanic"), ("HISPANIC OR LATINO", "Hispanic"),
                                        ("ASIAN - SOUTH EAST ASIAN", "Asian"), ("AMERICAN INDIAN/ALASKA NATIVE", "American Indian"),
                                        ("MULTIPLE RACE/ETHNICITY", "Other"), ("OTHER", "Other"), ("UNABLE TO OBTAIN", ""),
                                        ("PATIENT DECLINED TO ANSWER", ""), ("UNKNOWN", "")])
def test_mimic_race_groups(raw, group):
    assert mimic.race_group(raw) == group


def test_chexpert_demographics_as_published_xlsx(tmp_path):
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["PATIENT", "GENDER", "AGE_AT_CXR", "PRIMARY_RACE", "ETHNICITY"])
    sheet.append(["patient00001", "Female", 68, "White, non-Hispanic", "Non-Hispanic/Non-Latino"])
    book.save(tmp_path / "CHEXPERT DEMO.xlsx")
    train = write(tmp_path / "train.csv", CHEXPERT_HEADER, [chexpert_row(1, "Edema"), chexpert_row(2, "Edema")])
    sources, notes = chexpert.read([train], demographics=tmp_path / "CHEXPERT DEMO.xlsx")
    assert [s.extra["race"] for s in sources] == ["White, non-Hispanic"] and notes == ["1 image(s) left out: no demographics"]
    assert sources[0].extra["race_group"] == "White" and sources[0].extra["ethnicity"] == "Non-Hispanic/Non-Latino"
    (tmp_path / "bad.xlsx").write_text("not a workbook")
    with pytest.raises(EmbedkitError, match="bad.xlsx: not an Excel workbook"):
        chexpert.read([train], demographics=tmp_path / "bad.xlsx")


def test_csv_finds_the_patient_column_or_refuses(tmp_path, capsys):
    """A table with a 'Patient ID' column is split by patient without a mapping; no patient column is refused
    unless images are declared independent, which the manifest records."""
    rows = [[f"f{i}.png", f"P{i // 3}", "MF"[i % 2], "50", "Edema" if i % 2 else "Effusion", ("Train", "VAL", "test")[i // 3 % 3]]
            for i in range(60)]
    table = write(tmp_path / "t.csv", ["File", "Patient ID", "Gender", "Age", "Finding", "Split"], rows)
    base = "path=File,sex=Gender,age=Age,label=Finding"
    assert main(["data", "csv", "--table", str(table), "--columns", base, "--out", str(tmp_path / "m.csv")]) == 0
    m = read_manifest(tmp_path / "m.csv")
    assert len(set(m.column("patient_id"))) == 20
    assert main(["data", "csv", "--table", str(table), "--columns", base + ",split=Split", "--split", "official",
                 "--out", str(tmp_path / "s.csv")]) == 0     # 'Train', 'VAL' read as train, val
    assert set(read_manifest(tmp_path / "s.csv").column("split")) == {"train", "val", "test"}
    bare = write(tmp_path / "b.csv", ["File", "Gender", "Age", "Finding"], [r[:1] + r[2:5] for r in rows])
    assert main(["data", "csv", "--table", str(bare), "--columns", base, "--out", str(tmp_path / "x.csv")]) == 2
    assert "--columns patient_id=COLUMN" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()
    assert main(["data", "csv", "--table", str(bare), "--columns", base + ",patient_id=@image",
                 "--out", str(tmp_path / "i.csv")]) == 0
    assert read_manifest(tmp_path / "i.csv").column("patient_id")[0].startswith("image:")


def test_csv_names_the_rows_it_leaves_out(tmp_path, capsys):
    rows = [[f"f{i}.png", f"P{i}", "X" if i in (3, 7) else "MF"[i % 2], "50", "Edema" if i % 2 else "Effusion"]
            for i in range(60)]
    table = write(tmp_path / "t.csv", ["File", "Patient ID", "Gender", "Age", "Finding"], rows)
    assert main(["data", "csv", "--table", str(table), "--columns", "path=File,sex=Gender,age=Age,label=Finding",
                 "--classes", "Edema,Effusion", "--out", str(tmp_path / "m.csv")]) == 0
    out = capsys.readouterr()
    assert "2 of 60 row(s) left out: unreadable sex (line 5, 9)" in out.err + out.out
    assert "of 58 usable rows read" in out.err + out.out


def test_multilabel_manifests_keep_every_image_with_its_findings_and_masks(tmp_path, capsys):
    """--task multilabel: no image left out for having several findings; uncertain ones masked, not negative."""
    rows = [chexpert_row(1, "Edema"), chexpert_row(2, "Pleural Effusion", "Male", 45), chexpert_row(3, "No Finding"),
            chexpert_row(5, "Edema", value="-1.0")]
    rows[0][CHEXPERT_HEADER.index("Pleural Effusion")] = "1.0"                 # Edema and Effusion
    train = write(tmp_path / "train.csv", CHEXPERT_HEADER, rows)
    out = tmp_path / "ml.csv"
    assert main(["data", "chexpert", "--labels", str(train), "--task", "multilabel", "--findings", "Edema,Effusion",
                 "--out", str(out)]) == 0
    assert "multi-label, 2 findings" in capsys.readouterr().out
    m = read_manifest(out)
    assert list(m.column("label")) == ["Edema|Effusion", "Effusion", "No Finding", "No Finding"]
    assert list(m.column("masked")) == ["", "", "", "Edema"]
    from embedkit.spec import Task
    from embedkit.tasks import targets

    names, truth = targets(Task(kind="multilabel"), m.column("label"), m.column("masked"))
    assert names == ("Edema", "Effusion") and truth[3, 0] != truth[3, 0] and truth[3, 1] == 0
    assert main(["data", "chexpert", "--labels", str(train), "--task", "multilabel", "--findings", "Edma",
                 "--out", str(tmp_path / "x.csv")]) == 2
    assert "--findings: Edma" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()


def test_csv_multilabel_reads_nih_style_finding_lists(tmp_path):
    rows = [[f"f{i}.png", f"P{i}", "M" if i % 2 else "F", str(30 + i), ["Edema|Effusion", "No Finding", "Mass"][i % 3]]
            for i in range(30)]
    table = write(tmp_path / "t.csv", ["File", "Patient", "Gender", "Age", "Finding Labels"], rows)
    assert main(["data", "csv", "--table", str(table), "--columns", "path=File,patient_id=Patient,sex=Gender,age=Age,"
                 "label=Finding Labels", "--task", "multilabel", "--out", str(tmp_path / "m.csv")]) == 0
    m = read_manifest(tmp_path / "m.csv")
    assert len(m) == 30 and set(m.column("label")) == {"Edema|Effusion", "No Finding", "Mass"}
