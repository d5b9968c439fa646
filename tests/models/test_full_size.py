"""Full-size random weights in the exact published shapes (slow: hundreds of MB each)."""

import pytest
import torch

from benchmarks.common import full_encoder
from embedkit.models import get, load_encoder

pytestmark = pytest.mark.slow


EXPECTED_KEYS = {"clip": 302, "biomedclip": 352, "medclip-rn50": 521, "medclip-vit": 434, "gloria": 521}


@pytest.mark.parametrize("name", ["clip", "biomedclip", "medclip-vit", "medclip-rn50", "gloria"])
def test_full_size_published_format_round_trip(tmp_path, images, name):
    from .conftest import batch

    enc = full_encoder(name)
    target = tmp_path / {"clip": "open_clip_pytorch_model.bin", "gloria": "chexpert_resnet50.ckpt"}.get(name, "w")
    saved = get(name).save(enc, target)
    from embedkit.models.checkpoints import load_lightning_checkpoint, load_state_dict

    file = saved if saved.is_file() else next(p for p in saved.iterdir() if p.suffix in (".bin", ".ckpt"))
    state = load_lightning_checkpoint(file)["state_dict"] if name == "gloria" else load_state_dict(file)
    assert len(state) == EXPECTED_KEYS[name]  # the published key count (model-facts), position_ids included
    loaded = load_encoder(name, weights=saved)
    x = batch(enc, images[:2])
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_images(x), enc.encode_images(x))
    assert loaded.embed_dim == get(name).embed_dim
