"""Experiments join their manifest's rows to the cache by image: a new split, label or column
needs no re-encoding, and the metadata always comes from the manifest run on."""

import csv

import numpy as np
import pytest

from embedkit.cache import read_cache
from embedkit.cache.extract import ExtractConfig, extract
from embedkit.cache.join import join
from embedkit.errors import EmbedkitError
from embedkit.manifest import read_manifest


def test_a_resplit_relabelled_manifest_reads_the_same_embeddings(phantom_dir, tmp_path):
    src = phantom_dir / "manifest.csv"
    (res,) = extract(ExtractConfig(manifest=src, models=("clip-tiny",), cache_dir=tmp_path, workers=0))
    cache = read_cache(res.path)
    rows = list(csv.DictReader(src.open()))
    for r in rows:
        r["split"] = {"train": "test", "val": "train", "test": "val"}[r["split"]]
        r["site"] = "A" if int(r["age"]) % 2 else "B"
        r["path"] = str(phantom_dir / r["path"])  # the same files, named from elsewhere
    rows[0]["label"] = "Edema"
    other = tmp_path / "other.csv"
    with other.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows[::-1])
    (again,) = extract(ExtractConfig(manifest=other, models=("clip-tiny",), cache_dir=tmp_path, workers=0))
    assert again.reused and again.path == res.path  # no encoding
    m = read_manifest(other)
    view = join(cache, m)
    assert list(view.image_id) == [r["image_id"] for r in m.rows]
    assert list(view.meta["split"]) == [r["split"] for r in m.rows] and view.meta["label"][-1] == "Edema"
    from embedkit.cache.identity import content_key

    by_key = {k: i for i, k in enumerate(cache.image_id)}
    expected = [by_key[content_key(m.image_path(r))] for r in m.rows]  # independent: hash each file's bytes
    np.testing.assert_array_equal(view.embeddings, cache.embeddings[expected])
    # a manifest with an image the store never saw is refused with what to run
    from PIL import Image

    Image.new("L", (32, 32), 7).save(tmp_path / "new.png")
    rows[0]["image_id"], rows[0]["path"] = "new-image", str(tmp_path / "new.png")
    with other.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(EmbedkitError, match="not in this store.*embedkit extract"):
        join(cache, read_manifest(other))


def test_text_only_for_a_new_class_keeps_prompts_aligned_with_classes(phantom_dir, tmp_path):
    """--text-only for a manifest with a class the store's prompts lack: the class list is rewritten with
    the prompts, so each prompt still belongs to its own class after the join."""
    rows = list(csv.DictReader((phantom_dir / "manifest.csv").open()))
    for r in rows:
        r["path"] = str(phantom_dir / r["path"])
    few = tmp_path / "few.csv"
    with few.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows([r for r in rows if r["label"] != "Edema"])
    (res,) = extract(ExtractConfig(manifest=few, models=("clip-tiny",), cache_dir=tmp_path, workers=0))
    assert "Edema" not in read_cache(res.path).classes
    full = tmp_path / "full.csv"
    with full.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    extract(ExtractConfig(manifest=full, models=("clip-tiny",), cache_dir=tmp_path, workers=0, text_only=True))
    store = read_cache(res.path)
    assert set(store.classes) >= {"Edema", "Atelectasis"}
    t = store.text["clip"]
    edema = [p for p, c in zip(t.prompts, t.class_index) if store.classes[c] == "Edema"]
    assert edema and all("edema" in p.lower() for p in edema)


def test_row_keys_resolve_paths_as_pathlib_does(tmp_path):
    """One system call per row, the same resolved paths as Path.resolve: a linked folder, a linked file, '..',
    an absolute path and a missing file."""
    import os

    from embedkit.cache.identity import content_key, row_keys
    from embedkit.manifest import read_manifest, write_manifest

    real = tmp_path / "real"
    real.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (real / name).write_bytes(name.encode())
    os.symlink(real, tmp_path / "linked")
    os.symlink(real / "c.png", tmp_path / "c-link.png")
    (tmp_path / "sub").mkdir()
    paths = ["linked/a.png", "sub/../real/b.png", "c-link.png", str(real / "a.png"), "real/missing.png"]
    rows = [{"image_id": f"i{i}", "path": p, "patient_id": f"p{i}", "label": "x", "split": "train"}
            for i, p in enumerate(paths)]
    manifest = read_manifest(write_manifest(tmp_path / "m.csv", rows))
    keys = row_keys(manifest, {})
    assert [k.path for k in keys] == [str((tmp_path / p).resolve()) for p in paths]
    assert [k.key for k in keys[:4]] == [content_key(real / n) for n in ("a.png", "b.png", "c.png", "a.png")]
    assert keys[4].key is None and keys[4].size == -1
