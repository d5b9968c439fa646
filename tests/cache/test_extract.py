"""The cache: crash-safe resumable extraction, content keys, locking, corruption, bad images."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import textwrap

from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from embedkit.cache import list_caches, read_cache, verify_cache
from embedkit.cache.extract import ExtractConfig, extract
from embedkit.cli.app import main
from embedkit.errors import EmbedkitError


def cfg(manifest, cache_dir, **kw) -> ExtractConfig:
    return ExtractConfig(manifest=manifest, models=kw.pop("models", ("clip-tiny",)), cache_dir=cache_dir,
                         rows_per_chunk=kw.pop("rows_per_chunk", 16), batch_size=kw.pop("batch_size", 8),
                         workers=kw.pop("workers", 0), **kw)


@pytest.fixture
def small(phantom_dir, tmp_path):
    """A private copy of the phantom (tests may damage its images)."""
    dst = tmp_path / "data"
    shutil.copytree(phantom_dir, dst)
    return dst / "manifest.csv"


def test_cache_holds_embeddings_meta_and_prompts_readable_by_plain_h5py(small, tmp_path):
    (res,) = extract(cfg(small, tmp_path / "c", workers=1))
    assert res.n == 192 and res.dim == 32 and not res.reused
    with h5py.File(res.path, "r") as f:  # the layout documented in the README
        assert f["embeddings"].shape == (192, 32) and f["embeddings"].dtype == np.float32
        assert len(f["image_key"][0].decode()) == 64 and len(set(f["image_key"][()])) == 192  # SHA-256 of the bytes
        assert set(f["index"]) == {"path", "size", "mtime_ns", "image_key"} and len(f["index/path"]) == 192
        assert "meta" not in f  # labels, splits and attributes live in manifests
        assert set(f["text"]) == {"clip", "gloria", "cxrclip"}
        assert f["text/gloria/embeddings"].shape[0] == len(f["text/gloria/prompts"]) == 496
        assert bool(f.attrs["complete"]) and f.attrs["model"] == "clip-tiny"
    cache = read_cache(res.path)
    assert cache.classes[0] == "Atelectasis" and len(cache.image_id) == 192
    np.testing.assert_allclose(np.linalg.norm(cache.embeddings, axis=1), 1, rtol=1e-5)
    assert verify_cache(res.path)["n"] == 192
    again = extract(cfg(small, tmp_path / "c"))[0]
    assert again.reused and again.path == res.path


def test_two_models_in_one_pass_equal_single_runs(small, tmp_path):
    both = extract(cfg(small, tmp_path / "a", models=("clip-tiny", "medclip-rn50-tiny")))
    single = extract(cfg(small, tmp_path / "b", models=("medclip-rn50-tiny",)))
    np.testing.assert_array_equal(read_cache(both[1].path).embeddings, read_cache(single[0].path).embeddings)
    assert both[1].path.name == single[0].path.name


def _write(path, rows):
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_key_changes_with_everything_that_changes_numbers(small, tmp_path):
    base = extract(cfg(small, tmp_path / "c"))[0].path
    half = extract(cfg(small, tmp_path / "c", dtype="float16"))[0].path
    other_seed = extract(cfg(small, tmp_path / "c", seed=1))[0].path  # other weights
    rows = list(csv.DictReader(small.open()))
    # an age, a label and the splits change (a re-split, relabelled manifest): the same images, no encoding
    rows[3]["age"] = str(int(rows[3]["age"]) + 1)
    rows[4]["label"] = "Edema"
    for r in rows:
        r["split"] = {"train": "val", "val": "test", "test": "train"}[r["split"]]
    edited = small.with_name("edited.csv")
    _write(edited, rows[::-1])  # reordered too
    again = extract(cfg(edited, tmp_path / "c"))[0]
    assert again.reused and again.path == base
    # a changed image file is re-encoded, never silently reused
    Image.open(small.parent / rows[0]["path"]).resize((40, 40)).save(small.parent / rows[0]["path"])
    image_changed = extract(cfg(edited, tmp_path / "c"))[0]
    assert not image_changed.reused and image_changed.added == 1 and image_changed.path == base  # appended
    assert len({base, half, other_seed}) == 3
    assert read_cache(half).embeddings.dtype == np.float16
    # a file renamed to another key's name is refused, naming what differs
    from embedkit.cache.extract import key_fields
    from embedkit.manifest import read_manifest
    from embedkit.models import load_encoder

    fields = key_fields(load_encoder("clip-tiny"), dtype="float32", precision="bf16")
    with pytest.raises(EmbedkitError, match="precision differ"):
        read_cache(base, expect=fields)


RESUME = textwrap.dedent("""
    import os, signal, sys
    from embedkit.cache.extract import ExtractConfig, extract
    import embedkit.cache.layout as layout
    manifest, cache_dir, where = sys.argv[1], sys.argv[2], sys.argv[3]
    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)
    def progress(done, total):
        if where == "chunks" and done >= 56:
            die()
    if where == "assembly":
        layout._fsync = die          # killed after the .partial file is written, before the rename
    extract(ExtractConfig(manifest=manifest, models=("clip-tiny",), cache_dir=cache_dir, rows_per_chunk=16,
                          batch_size=8, workers=0), on_progress=progress)
""")


@pytest.mark.parametrize("where", ["chunks", "assembly"])
def test_resume_after_sigkill_is_bitwise_identical(small, tmp_path, where):
    script = tmp_path / "run.py"
    script.write_text(RESUME)
    killed = subprocess.run([sys.executable, str(script), str(small), str(tmp_path / "k"), where], capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert not list((tmp_path / "k").glob("*.h5"))  # nothing valid-looking left behind
    parts = list((tmp_path / "k").glob("*.parts/chunk-*.npz"))
    assert len(parts) == (3 if where == "chunks" else 12)
    stamps = {p: p.stat().st_mtime_ns for p in parts}
    resumed = extract(cfg(small, tmp_path / "k"))[0]
    clean = extract(cfg(small, tmp_path / "clean"))[0]
    np.testing.assert_array_equal(read_cache(resumed.path).embeddings, read_cache(clean.path).embeddings)
    assert resumed.path.name == clean.path.name
    if where == "chunks":  # finished chunks were not recomputed
        assert all(not p.exists() or p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert not list((tmp_path / "k").glob("*.parts")) and not list((tmp_path / "k").glob("*.partial"))


def test_lock_refuses_a_second_extraction(small, tmp_path):
    from embedkit.cache.parts import lock as _lock

    path = tmp_path / "c" / "x.h5"
    with _lock(path):
        with pytest.raises(EmbedkitError, match="another process is extracting this cache"):
            with _lock(path):
                pass
    with _lock(path):  # released afterwards
        pass


def test_corrupted_and_truncated_files_are_detected(small, tmp_path):
    path = extract(cfg(small, tmp_path / "c"))[0].path
    data = bytearray(path.read_bytes())
    with h5py.File(path, "r") as f:
        offset = f["embeddings"].id.get_offset() if f["embeddings"].chunks is None else None
        chunk = f["embeddings"].id.get_chunk_info(0)
    data[chunk.byte_offset + 100] ^= 0xFF  # flip bits inside the embeddings
    bad = tmp_path / "flipped.h5"
    bad.write_bytes(bytes(data))
    with pytest.raises(EmbedkitError, match="truncated or corrupted"):
        read_cache(bad)
    short = tmp_path / "short.h5"
    short.write_bytes(path.read_bytes()[: len(data) // 2])
    with pytest.raises(EmbedkitError, match="truncated or corrupted"):
        read_cache(short)
    assert offset is None


def _break_images(manifest):
    folder = manifest.parent / "images"
    (folder / "ph000003.png").unlink()                                          # missing
    (folder / "ph000010.png").write_bytes((folder / "ph000010.png").read_bytes()[:60])  # truncated
    (folder / "ph000020.png").write_bytes(b"this is not an image")               # unreadable
    Image.fromarray(np.zeros((32, 32, 4), dtype=np.uint8), "RGBA").save(folder / "ph000030.png")  # other mode: fine


def test_bad_images_stop_the_run_or_are_skipped_and_listed(small, tmp_path, capsys):
    _break_images(small)
    with pytest.raises(EmbedkitError, match=r"bad image: .*ph000003.png: image file not found"):
        extract(cfg(small, tmp_path / "c"))
    assert not list((tmp_path / "c").glob("*.h5"))
    res = extract(cfg(small, tmp_path / "c", skip_bad=True))[0]
    names = lambda bad: sorted(Path(p).stem for p, _ in bad)  # noqa: E731
    assert res.n == 189 and names(res.bad) == ["ph000003", "ph000010", "ph000020"]
    cache = read_cache(res.path)
    assert len(cache.image_id) == 189 and str((small.parent / "images/ph000030.png").resolve()) in cache.index
    assert names(cache.bad) == ["ph000003", "ph000010", "ph000020"]
    assert "truncated" in dict((Path(p).stem, r) for p, r in cache.bad)["ph000010"]
    assert main(["extract", "--model", "clip-tiny", "--manifest", str(small), "--cache-dir", str(tmp_path / "c"),
                 "--skip-bad", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "reused" in out and "3 bad image(s) left out" in out


def test_cli_extract_ls_verify_and_text_only(small, tmp_path, capsys):
    args = ["--manifest", str(small), "--cache-dir", str(tmp_path / "c"), "--quiet"]
    assert main(["extract", "--model", "clip-tiny", *args]) == 0
    assert "N=192, D=32" in capsys.readouterr().out
    assert main(["extract", "--model", "clip-tiny", "--text-only", *args]) == 0
    (info,) = list_caches(tmp_path / "c")
    assert info["complete"] and info["text"] == ["clip", "cxrclip", "gloria"]
    assert main(["cache", "verify", str(info["path"])]) == 0
    assert main(["cache", "ls", str(tmp_path / "c")]) == 0
    assert "clip-tiny" in capsys.readouterr().out
    assert main(["extract", "--model", "clip-tiny", "--precision", "fp16", *args]) == 2
    assert "needs a GPU" in capsys.readouterr().err


def test_a_larger_manifest_encodes_only_its_new_images(small, tmp_path):
    """Grow the set: the second manifest's new half is encoded and appended, the first half reused;
    the result equals a store extracted from the larger manifest in one go."""
    rows = list(csv.DictReader(small.open()))
    first = small.with_name("first.csv")
    _write(first, rows[:96])
    a = extract(cfg(first, tmp_path / "grow"))[0]
    assert a.added == 96
    b = extract(cfg(small, tmp_path / "grow"))[0]
    assert b.added == 96 and b.n == 192 and b.path == a.path
    grown, whole = read_cache(b.path), read_cache(extract(cfg(small, tmp_path / "whole"))[0].path)
    by_key = {k: i for i, k in enumerate(whole.image_id)}
    order = [by_key[k] for k in grown.image_id]
    np.testing.assert_array_equal(grown.embeddings, whole.embeddings[order])
    assert extract(cfg(small, tmp_path / "grow"))[0].reused  # nothing left to encode


def test_probe_on_a_truncated_store_names_the_one_command_that_rebuilds_it(small, tmp_path, capsys):
    """The advice is a command with this model, manifest and cache folder filled in; running it moves the damaged
    file aside (nothing deleted) and rebuilds the store, after which the probe runs."""
    import shlex

    from embedkit.cli.app import main

    path = extract(cfg(small, tmp_path / "c"))[0].path
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    probe = ["probe", "--model", "clip-tiny", "--manifest", str(small), "--cache-dir", str(tmp_path / "c"),
             "--runs-dir", str(tmp_path / "r"), "--epochs", "2", "--seeds", "0"]
    assert main(probe) == 2
    err = " ".join(capsys.readouterr().err.split())
    command = err.split("`")[1]
    assert command == f"embedkit extract --model clip-tiny --manifest {small} --cache-dir {tmp_path / 'c'}"
    with pytest.warns(UserWarning, match="moved to .*damaged and rebuilt"):
        assert main(shlex.split(command)[1:]) == 0
    assert path.with_name(path.name + ".damaged").is_file()
    assert main(probe) == 0
