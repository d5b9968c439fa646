from embedkit.cli.app import main


def test_phantom_command_and_bad_option(tmp_path, capsys):
    assert main(["data", "phantom", "--out", str(tmp_path), "--per-group", "5", "--size", "16"]) == 0
    assert "120 images" in capsys.readouterr().out
    assert main(["data", "phantom", "--out", str(tmp_path), "--bias", "sex:F"]) == 2
    assert "error: --bias 'sex:F'" in capsys.readouterr().err


def test_bad_manifest_is_a_message_not_a_traceback(tmp_path, capsys):
    (tmp_path / "m.csv").write_text("a,b\n1,2\n")
    assert main(["data", "nih", "--metadata", str(tmp_path / "m.csv"), "--out", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert "not an NIH metadata file" in err and "Traceback" not in err


def test_nih_command_prints_pools_qualification_and_splits(tmp_path, capsys):
    from tests.data.test_nih import make_rows, write

    meta = write(tmp_path / "m.csv", make_rows())
    args = ["data", "nih", "--metadata", str(meta), "--out", str(tmp_path / "out.csv"), "--per-group", "4",
            "--min-fraction", "0.75", "--classes", "Edema,Effusion,Pneumonia"]
    assert main(args) == 0
    out = capsys.readouterr()
    assert "qualified" in out.out and "dropped: old has 4 < 8 images" in out.out
    assert "32 images" in out.out and "train" in out.out
    assert "unusable age" in out.err
