"""The command line reads as one tool and never shows a traceback (README: CLI, Exit codes)."""

from __future__ import annotations

import fcntl
import threading
import time

import pytest
import typer

from embedkit.cli.app import app, main
from embedkit.cli.options import SHARED, SYNONYMS


def _commands(group=None, prefix=()):
    group = group or typer.main.get_command(app)
    for name, cmd in sorted(group.commands.items()):
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, prefix + (name,))
        else:
            yield prefix + (name,), cmd


COMMANDS = list(_commands())


def test_every_command_is_walked():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"probe", "zeroshot", "finetune", "extract", "evaluate", "report", "study", "models", "cache ls",
            "cache verify", "data nih", "data phantom"} <= names


def test_every_option_has_help_and_one_name_per_concept():
    seen: dict[str, tuple] = {}
    for path, cmd in COMMANDS:
        for param in cmd.params:
            where = f"{' '.join(path)} {param.name}"
            assert (getattr(param, "help", None) or "").strip(), f"{where} has no help text"
            for opt in getattr(param, "opts", []):
                assert opt not in SYNONYMS, f"{where}: use {SYNONYMS[opt]} rather than {opt}"
                if opt in SHARED:  # zeroshot's seeds default to its 10 prompt samples
                    kind = (param.is_flag, param.multiple, param.default if opt != "--seeds" else None,
                            param.help if opt not in ("--seeds", "--lrs", "--weight-decays", "--model") else None)
                    assert seen.setdefault(opt, kind) == kind, f"{opt} differs in {' '.join(path)}: {kind}"


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=[" ".join(p) for p, _ in COMMANDS])
def test_unknown_option_is_a_usage_error(path, capsys):
    assert main([*path, "--no-such-option"]) == 2
    err = capsys.readouterr().err
    assert "--no-such-option" in err and "Traceback" not in err


@pytest.fixture()
def manifest(phantom_dir):
    return phantom_dir / "manifest.csv"


BAD = [
    (["probe", "--model", "clip-tiny", "--seeds", "a,b"], "--seeds"),
    (["zeroshot", "--model", "clip-tiny", "--seeds", "3-1"], "--seeds"),
    (["finetune", "--model", "clip-tiny", "--lora", "--seeds", "x"], "--seeds"),
    (["probe", "--model", "clip-tiny", "--lrs", "abc"], "--lrs"),
    (["finetune", "--model", "clip-tiny", "--full", "--lrs", "-1"], "--lrs"),
    (["probe", "--model", "clip-tiny", "--ks", "0"], "--ks"),
    (["probe", "--model", "clip-tiny", "--head", "foo"], "--head"),
    (["probe", "--model", "clip-tiny", "--head"], "--head"),
    (["probe", "--model", "foo"], "--model"),
    (["probe", "--model", "clip-tiny", "--epochs", "x"], "--epochs"),
    (["probe", "--model", "clip-tiny", "--weight-decays", "-0.1"], "--weight-decays"),
    (["extract", "--model", "clip-tiny", "--device", "cuda:7"], "--device"),
    (["extract", "--model", "clip-tiny", "--precision", "fp8"], "--precision"),
    (["extract", "--model", "clip-tiny", "--shard", "3/2"], "--shard"),
    (["finetune", "--model", "clip-tiny"], "--lora / --full"),
    (["zeroshot", "--model", "clip-tiny", "--prompts", "clap"], "--prompts"),
]


@pytest.mark.parametrize("args,option", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_values_name_their_option(args, option, manifest, capsys):
    assert main([*args, "--manifest", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert option in err and "Traceback" not in err


def test_missing_inputs_are_errors_not_empty_success(tmp_path, capsys):
    assert main(["report", "--runs-dir", str(tmp_path / "nope")]) == 2
    assert main(["report", "--runs-dir", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "no finished runs" in capsys.readouterr().err
    assert main(["cache", "ls", str(tmp_path / "nope")]) == 2
    assert main(["cache", "ls", str(tmp_path)]) == 2
    assert "no cache files" in capsys.readouterr().err


def test_files_of_the_wrong_kind_are_named(tmp_path, manifest, capsys):
    binary = tmp_path / "b.csv"
    binary.write_bytes(bytes(range(256)) * 4)
    empty = tmp_path / "e.csv"
    empty.write_text("")
    assert main(["probe", "--model", "clip-tiny", "--manifest", str(binary)]) == 2
    assert "not a UTF-8 CSV" in capsys.readouterr().err
    assert main(["probe", "--model", "clip-tiny", "--manifest", str(empty)]) == 2
    assert "is empty" in capsys.readouterr().err
    assert main(["data", "nih", "--metadata", str(binary), "--out", str(tmp_path / "o.csv")]) == 2
    assert "not an NIH metadata CSV" in capsys.readouterr().err
    assert main(["cache", "verify", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert "not an HDF5 file" in err and "delete" not in err


def test_locked_cache_exits_3_and_wait_waits(tmp_path, manifest, capsys):
    from embedkit.cache.extract import cache_key, cache_path, key_fields
    from embedkit.manifest import read_manifest
    from embedkit.models import load_encoder

    args = ["extract", "--model", "clip-tiny", "--manifest", str(manifest), "--cache-dir", str(tmp_path / "c"), "--quiet"]
    fields = key_fields(load_encoder("clip-tiny"), dtype="float32", precision="fp32")
    path = cache_path(tmp_path / "c", "clip-tiny", cache_key(fields))
    path.parent.mkdir(parents=True)
    holder = open(path.with_name(path.name + ".lock"), "a+")
    fcntl.flock(holder, fcntl.LOCK_EX)
    assert main(args) == 3
    assert "--wait" in capsys.readouterr().err
    threading.Timer(0.5, holder.close).start()
    t0 = time.perf_counter()
    assert main([*args, "--wait"]) == 0
    assert time.perf_counter() - t0 >= 0.4 and path.is_file()
    assert not list((tmp_path / "c").rglob("*.lock")), "an empty lock file was left behind"


def test_a_bug_is_one_line_and_a_log(monkeypatch, tmp_path, capsys):
    from embedkit.models import catalog

    def boom():
        raise RuntimeError("kaboom")

    monkeypatch.setattr(catalog, "listed", boom)
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: kaboom" in err and "Traceback" not in err
    log = err.split("full traceback: ")[1].split(" ")[0]
    assert "Traceback" in open(log).read()


def test_version_and_bare_command(capsys):
    assert main(["--version"]) == 0
    assert "embedkit" in capsys.readouterr().out
    assert main([]) == 2


def test_table_cells_print_as_written(capsys):
    """Data in a table (a group named '[site A]', a CI) is text, never rich markup that would vanish."""
    from embedkit.cli.console import table

    table("t", ["group", "value"], [["[site A]", "0.5 [0.1, 0.9]"], ["[bold]x[/bold]", 1]])
    out = capsys.readouterr().out
    assert "[site A]" in out and "[bold]x[/bold]" in out and "0.5 [0.1, 0.9]" in out
    long = "runs/" + "x" * 300 + "/seed-0"                       # wider than the console: folded, never cut
    table("t", ["run"], [[long]])
    out = capsys.readouterr().out
    assert "…" not in out and long in "".join(c for c in out if c not in "│ \n")
