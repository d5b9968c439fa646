"""Decoding of every input mode and each family's preprocessing on hand-computed values."""

import numpy as np
import pytest
import torch
from PIL import Image

from embedkit.errors import EmbedkitError
from embedkit.models.images import (CLIP_MEAN, CLIP_STD, MEDCLIP_MEAN, MEDCLIP_STD, ClipPreprocess, GloriaPreprocess,
                                    MedclipPreprocess, decode, to_8bit)


def test_input_modes_are_converted_deliberately(tmp_path):
    gray = np.array([[0, 100], [200, 255]], dtype=np.uint8)
    Image.fromarray(gray, mode="L").save(tmp_path / "l.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "i16.png")  # 16-bit grayscale PNG
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 7)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.dstack([gray] * 3), mode="RGB").save(tmp_path / "rgb.jpg", quality=100)
    assert np.array_equal(np.asarray(decode(tmp_path / "l.png")), gray)
    i16 = decode(tmp_path / "i16.png")
    assert i16.mode == "L" and np.array_equal(np.asarray(i16), gray)
    rgba_img = decode(tmp_path / "rgba.png")
    assert rgba_img.mode == "RGB" and np.array_equal(np.asarray(rgba_img)[..., 0], gray)  # alpha dropped, not blended
    jpg = decode(tmp_path / "rgb.jpg")
    assert jpg.mode == "RGB" and np.abs(np.asarray(jpg)[..., 0].astype(int) - gray).max() <= 3
    assert to_8bit(Image.new("P", (2, 2))).mode == "RGB"


def test_bad_files_name_the_file(tmp_path):
    (tmp_path / "trunc.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(EmbedkitError, match="trunc.png: unreadable or truncated"):
        decode(tmp_path / "trunc.png")
    with pytest.raises(EmbedkitError, match="missing.png: image file not found"):
        decode(tmp_path / "missing.png")


def test_clip_preprocess_by_hand():
    arr = np.arange(32, dtype=np.uint8).reshape(4, 8) * 8  # 4 high, 8 wide: shortest side already 4
    out = ClipPreprocess(size=4)(Image.fromarray(arr, mode="L"))
    assert out.shape == (3, 4, 4)
    crop = arr[:, 2:6] / 255.0  # centre crop of the width
    for c in range(3):
        np.testing.assert_allclose(out[c].numpy(), (crop - CLIP_MEAN[c]) / CLIP_STD[c], rtol=1e-5, atol=1e-6)


def test_medclip_preprocess_by_hand():
    arr = np.array([[10, 20, 30, 40], [50, 60, 70, 80]], dtype=np.uint8)  # w=4, h=2
    out = MedclipPreprocess(size=4)(Image.fromarray(arr, mode="L"))
    expected = np.zeros((4, 4))
    expected[1:3] = arr  # pasted at (0, int((4-2)/2)) on a black square
    assert out.shape == (1, 4, 4)
    np.testing.assert_allclose(out[0].numpy(), (expected / 255.0 - MEDCLIP_MEAN) / MEDCLIP_STD, rtol=1e-5)


def test_gloria_preprocess_by_hand():
    arr = np.array([[10, 20, 30, 40], [50, 60, 70, 80]], dtype=np.uint8)  # wider than high: no resize at scale 4
    out = GloriaPreprocess(scale=4, crop=2)(Image.fromarray(arr, mode="L"))
    padded = np.zeros((4, 4))
    padded[1:3] = arr  # floor(2/2) rows before, ceil(2/2) after
    expected = (padded[1:3, 1:3] / 255.0 - 0.5) / 0.5
    assert out.shape == (3, 2, 2)
    for c in range(3):
        np.testing.assert_allclose(out[c].numpy(), expected, rtol=1e-5)
    # a taller image: longer side (height) to 4 with area interpolation, width padded
    tall = np.full((8, 4), 100, dtype=np.uint8)
    out = GloriaPreprocess(scale=4, crop=4)(Image.fromarray(tall, mode="L"))
    assert torch.allclose(out[0, :, 1:3], torch.full((4, 2), (100 / 255 - 0.5) / 0.5))
    assert torch.allclose(out[0, :, 0], torch.full((4,), -1.0))
