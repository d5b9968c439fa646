"""The Python API: importing embedkit loads no torch, docs/api.md's example runs, and the results table
holds the report's numbers in the documented columns (CSV and Parquet)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).parents[1] / "docs" / "api.md"


def test_import_embedkit_loads_no_heavy_module():
    code = ("import sys, embedkit; heavy = [m for m in ('torch', 'transformers', 'open_clip', 'matplotlib', 'pandas', 'numba') "
            "if m in sys.modules]; assert not heavy, heavy")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_the_documented_example_runs(tmp_path, monkeypatch):
    block = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, str(DOC), "exec"), {})
    assert (tmp_path / "runs/phantom/medclip-rn50-tiny/linear/seed-1/run.json").is_file()


def test_results_equal_the_report_and_load_in_pandas(tmp_path):
    import json

    import pandas as pd

    from embedkit.cli.app import main
    from embedkit.report.results import COLUMNS

    from .test_report import fake_run

    for seed in range(2):
        fake_run(tmp_path / "runs", "clip", "linear", seed, 2.0)
    fake_run(tmp_path / "runs", "gloria", "knn", 0, 0.5)
    assert main(["report", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "rep"), "--n-boot", "50"]) == 0
    assert main(["results", "--runs-dir", str(tmp_path / "runs"), "--n-boot", "50", "--format", "parquet",
                 "--out", str(tmp_path / "r.parquet")]) == 0
    assert main(["results", "--runs-dir", str(tmp_path / "runs"), "--n-boot", "50", "--out", str(tmp_path / "r.csv"),
                 "--threads", "2"]) == 0
    parquet, csv = pd.read_parquet(tmp_path / "r.parquet"), pd.read_csv(tmp_path / "r.csv", keep_default_na=False)
    assert list(parquet.columns) == list(csv.columns) == list(COLUMNS) and len(parquet) == len(csv) > 100
    summary = json.loads((tmp_path / "rep/summary.json").read_text())["toy/clip/linear"]
    row = parquet[(parquet.model == "clip") & (parquet.seed == "all") & (parquet.attribute == "sex")
                  & (parquet.metric == "f1_gap")].iloc[0]
    gap = summary["fairness"]["sex"]["f1_gap"]
    assert row.value == pytest.approx(gap["mean"]) and [row.ci_low, row.ci_high] == pytest.approx(gap["ci"])
    assert row.p == pytest.approx(summary["p_value"]["sex"]["f1_gap"])
    assert row.q == pytest.approx(summary["q_value"]["sex"]["f1_gap"])
    accuracy = parquet[(parquet.model == "gloria") & (parquet.seed == "seed-0") & (parquet.metric == "accuracy")]
    assert accuracy.n.iloc[0] == 120 and str(parquet.n.dtype) == "Int64"          # a count, empty where none
    assert (tmp_path / "r.csv").read_text().splitlines()[1].endswith(",120")
    report_csv = pd.read_parquet(tmp_path / "r.parquet")
    assert (tmp_path / "rep/results.csv").is_file() and len(pd.read_csv(tmp_path / "rep/results.csv")) == len(report_csv)
    assert main(["results", "--runs-dir", str(tmp_path / "runs"), "--format", "parquet"]) == 2   # binary: needs --out


def test_results_write_the_format_their_file_name_says(tmp_path, capsys):
    """--out's suffix picks the format; a suffix of another format, or one that is none of them, is refused before
    any work (a CSV written to results.parquet or results.xlsx would not load)."""
    import pandas as pd

    from embedkit.cli.app import main

    from .test_report import fake_run

    fake_run(tmp_path / "runs", "clip", "linear", 0, 2.0)
    runs = ["results", "--runs-dir", str(tmp_path / "runs"), "--n-boot", "20"]
    assert main([*runs, "--out", str(tmp_path / "r.parquet")]) == 0
    assert main([*runs, "--out", str(tmp_path / "r.json")]) == 0
    assert main([*runs, "--format", "csv", "--out", str(tmp_path / "r.txt")]) == 0
    assert len(pd.read_parquet(tmp_path / "r.parquet")) == len(pd.read_json(tmp_path / "r.json")) \
        == len(pd.read_csv(tmp_path / "r.txt")) > 10
    capsys.readouterr()
    assert main([*runs, "--out", str(tmp_path / "r.xlsx")]) == 2
    assert "r.xlsx: give a .csv, .parquet or .json file, or say which with --format" in capsys.readouterr().err
    assert main([*runs, "--format", "json", "--out", str(tmp_path / "r.csv")]) == 2
    assert "names a csv file but --format is json" in capsys.readouterr().err
    assert not (tmp_path / "r.xlsx").exists() and not (tmp_path / "r.csv").exists()


@pytest.mark.parametrize("call, message", [
    (lambda e: e.probe("m.csv", "clip-tiny", seeds="0-x"), "'0-x' is not a seed"),
    (lambda e: e.probe("m.csv", "clip-tiny", seeds=[0], epochs=0), "--epochs 0: must be at least 1"),
    (lambda e: e.evaluate("p.csv", n_boot=-1), "--n-boot -1: must be at least 0"),
    (lambda e: e.evaluate("p.csv", n_perm=-1), "--n-perm -1: must be at least 0"),
    (lambda e: e.results("runs", threads=0), "--threads 0: must be at least 1"),
    (lambda e: e.extract("m.csv", []), "models: name at least one encoder"),
    (lambda e: e.probe("m.csv", "clip-tiny,gloria-tiny"), "model 'clip-tiny,gloria-tiny': probe takes one model and one head"),
    (lambda e: e.probe("m.csv", "clip-tiny", head="linear,mlp"), "head 'linear,mlp': probe takes one model and one head"),
])
def test_the_api_refuses_what_the_cli_refuses_before_reading_anything(call, message):
    """Its numbers are bounded as the CLI's options are (none of these files exists: the settings fail first)."""
    import embedkit
    from embedkit.errors import EmbedkitError

    with pytest.raises(EmbedkitError, match=re.escape(message)):
        call(embedkit)


def test_the_api_takes_seeds_as_the_cli_writes_them(tmp_path, monkeypatch):
    import embedkit
    from embedkit.data.phantom import PhantomSpec, make_phantom

    monkeypatch.chdir(tmp_path)
    manifest = make_phantom(Path("p"), PhantomSpec(per_group=5, size=16))
    assert [p.name.split("-")[0] for p in embedkit.extract(manifest, "clip-tiny, gloria-tiny")] == ["clip", "gloria"]
    folders = embedkit.probe(manifest, "clip-tiny", head="linear", seeds="0-1", epochs=2)
    assert [f.name for f in folders] == ["seed-0", "seed-1"]
    assert [f.name for f in embedkit.probe(manifest, "clip-tiny", head="knn", seeds=3)] == ["seed-3"]


@pytest.mark.parametrize("argv", [["--help"], ["data", "--help"], ["evaluate", "--help"], ["results", "--help"],
                                  ["report", "--help"], ["probe", "--help"], ["study", "--help"], ["models"]])
def test_the_cli_starts_without_heavy_modules(argv):
    """torch, transformers, open_clip, matplotlib and numba load when a command needs them, not to print help."""
    code = ("import sys; from embedkit.cli.app import main; main(%r); heavy = [m for m in ('torch', 'transformers', "
            "'open_clip', 'matplotlib', 'numba') if m in sys.modules]; assert not heavy, heavy" % argv)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-500:]
