import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from embedkit.data.phantom import Bias, PhantomSpec, draw_radiograph, make_phantom
from embedkit.errors import EmbedkitError
from embedkit.manifest import STUDY_CLASSES, read_manifest


def test_structure_of_nih_6x200(phantom_manifest, phantom_dir):
    m = phantom_manifest
    assert m.classes == tuple(sorted(STUDY_CLASSES))
    cells = Counter(zip(m.column("label"), m.column("sex_age")))
    assert set(cells.values()) == {8} and len(cells) == 24
    assert len(set(m.column("patient_id"))) < len(m)  # some patients have several images
    img = Image.open(m.image_path(m.rows[0]))
    assert img.mode == "L" and img.size == (32, 32)
    meta = json.loads((phantom_dir / "phantom.json").read_text())
    assert meta["n_images"] == 192 and meta["bias"] == []


def test_deterministic_for_a_seed(tmp_path):
    spec = PhantomSpec(per_group=5, size=24, seed=3)
    a, b = make_phantom(tmp_path / "a", spec), make_phantom(tmp_path / "b", spec)
    assert a.read_text() == b.read_text()
    for name in ("ph000000.png", "ph000077.png"):
        assert (tmp_path / "a/images" / name).read_bytes() == (tmp_path / "b/images" / name).read_bytes()
    make_phantom(tmp_path / "c", PhantomSpec(per_group=5, size=24, seed=4))
    assert (tmp_path / "c/images/ph000000.png").read_bytes() != (tmp_path / "a/images/ph000000.png").read_bytes()


def test_bias_is_planted_and_recorded(tmp_path):
    spec = PhantomSpec(per_group=5, size=24, seed=0, bias=[Bias.parse("sex=F:0.75")])
    m = read_manifest(make_phantom(tmp_path, spec))
    strength = {(r["sex"]): float(r["finding_strength"]) for r in m.rows}
    assert strength == {"M": 1.0, "F": 0.25}
    assert json.loads((tmp_path / "phantom.json").read_text())["bias"] == [{"attribute": "sex", "group": "F", "strength": 0.75}]


def test_signatures_differ_by_finding_and_fade_with_bias():
    def draw(label, strength):
        return draw_radiograph(np.random.default_rng(1), 64, label, "M", 40, strength).astype(float)

    base = draw("Atelectasis", 0.0)
    for label in ("Cardiomegaly", "Effusion", "Edema", "Consolidation", "Pneumothorax"):
        full, faint = np.abs(draw(label, 1.0) - base).sum(), np.abs(draw(label, 0.3) - base).sum()
        assert full > faint > 0, label


@pytest.mark.parametrize("text", ["sex=X:0.5", "sex=F", "age_group=old:1.5", "race=a:0.1"])
def test_bad_bias_is_refused(text):
    with pytest.raises(EmbedkitError, match="--bias"):
        Bias.parse(text)
