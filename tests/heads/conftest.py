"""Synthetic caches: embeddings with known structure, written through the real layout module."""

from __future__ import annotations

import numpy as np
import pytest

from embedkit.cache.layout import TextSet, write_cache
from embedkit.manifest import write_manifest

CLASSES = ("Atelectasis", "Cardiomegaly", "Edema")


def make_cache(path, x, y, split, *, text=None, classes=CLASSES, logit_scale=100.0, sex=None):
    """A store file and, beside it (``path.with_suffix('.csv')``), the manifest whose rows it holds:
    one small file per row (its bytes give the content key the store is indexed by)."""
    from embedkit.cache.identity import content_key

    n = len(x)
    sex = np.where(np.arange(n) % 2 == 0, "M", "F") if sex is None else np.asarray(sex)
    age = np.where(np.arange(n) % 4 < 2, 40, 70)
    folder = path.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    rows, index, keys = [], {}, []
    for i in range(n):
        f = folder / f"i{i}.png"
        f.write_bytes(f"image {i}".encode())
        st, key = f.stat(), content_key(f)
        index[str(f.resolve())] = (st.st_size, st.st_mtime_ns, key)
        keys.append(key)
        rows.append({"image_id": f"i{i}", "path": str(f), "patient_id": f"p{i}", "label": classes[y[i]], "sex": sex[i],
                     "age": str(age[i]), "split": split[i]})
    write_manifest(path.with_suffix(".csv"), rows)
    attrs = {"key": f"synthetic-{path.name}", "key_fields": {}, "model": "synthetic", "logit_scale": logit_scale,
             "dtype": "float32"}
    return write_cache(path, embeddings_chunks=[(0, x)], n=n, dim=x.shape[1], image_key=keys, index=index,
                       classes=classes, text=text or {}, attrs=attrs, bad=[])


def separable(n=300, d=16, seed=0, noise=0.5):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(len(CLASSES), d)) * 2
    y = np.arange(n) % len(CLASSES)
    x = (centers[y] + noise * rng.normal(size=(n, d))).astype(np.float32)
    split = np.array(["train"] * int(n * 0.7) + ["val"] * int(n * 0.1) + ["test"] * (n - int(n * 0.7) - int(n * 0.1)))
    return x, y, split


@pytest.fixture
def synthetic_cache(tmp_path):
    x, y, split = separable()
    return make_cache(tmp_path / "synthetic.h5", x, y, split)


def text_set(prompts_per_class: dict[int, np.ndarray]) -> TextSet:
    emb = np.concatenate(list(prompts_per_class.values()))
    index = np.concatenate([[c] * len(v) for c, v in prompts_per_class.items()])
    return TextSet(emb, [f"prompt {i}" for i in range(len(emb))], index)
