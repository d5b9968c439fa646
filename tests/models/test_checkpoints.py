"""No checkpoint may run code when loaded: a planted payload is refused in every accepted format."""

import io
import os
import pickle
import warnings
import zipfile

import pytest
import torch
from torch import nn

from embedkit.errors import EmbedkitError
from embedkit.models import load_encoder
from embedkit.models.checkpoints import load_lightning_checkpoint, load_state_dict


class Payload:
    """Unpickling this would create ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "the payload ran"


def test_plain_state_dict_bin_is_refused(tmp_path, marker):
    torch.save({"visual.proj": torch.zeros(2), "evil": Payload(marker)}, tmp_path / "open_clip_pytorch_model.bin")
    with pytest.raises(EmbedkitError, match="refused to load"):
        load_encoder("clip-tiny", weights=tmp_path / "open_clip_pytorch_model.bin")


@pytest.mark.parametrize("name, layout", [("biomedclip", "folder"), ("medclip-vit", "folder"), ("medclip-rn50", "file")])
def test_folders_and_zip_files_are_refused(published, tmp_path, marker, name, layout):
    import shutil

    _, source, _ = published[name]
    folder = tmp_path / name
    shutil.copytree(source if source.is_dir() else source.parent, folder)
    weights = folder / ("open_clip_pytorch_model.bin" if name == "biomedclip" else "pytorch_model.bin")
    torch.save({"x": torch.zeros(1), "evil": Payload(marker)}, weights)
    with pytest.raises(EmbedkitError, match="refused to load"):
        load_encoder(f"{name}-tiny", weights=folder if layout == "folder" else weights)


def test_lightning_checkpoint_is_refused_but_omegaconf_config_is_read(published, tmp_path, marker):
    torch.save({"state_dict": {"gloria.x": torch.zeros(1)}, "hyper_parameters": Payload(marker)}, tmp_path / "evil.ckpt")
    with pytest.raises(EmbedkitError, match="refused to load.*os.system|refused to load.*posix.system"):
        load_encoder("gloria-tiny", weights=tmp_path / "evil.ckpt")
    ckpt = load_lightning_checkpoint(published["gloria"][1])  # the real format still loads
    assert ckpt["pytorch-lightning_version"] == "1.1.4"


def _torchscript_archive(state: dict, path):
    """A TorchScript archive whose state dict has exactly ``state``'s keys (like OpenAI's ViT-B-16.pt)."""
    root = nn.Module()
    for key, value in state.items():
        *parents, leaf = key.split(".")
        node = root
        for p in parents:
            if not hasattr(node, p):
                node.add_module(p, nn.Module())
            node = getattr(node, p)
        node.register_buffer(leaf, value.clone())

    class Wrapper(nn.Module):
        def __init__(self, inner):
            super().__init__()
            for name, child in inner.named_children():
                self.add_module(name, child)
            for name, buf in inner.named_buffers(recurse=False):
                self.register_buffer(name, buf)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    torch.jit.save(torch.jit.script(Wrapper(root)), str(path))


def test_openai_torchscript_archive_loads(published, tmp_path, images):
    from .conftest import batch

    enc, weights, _ = published["clip"]
    state = {k: v.half() if v.is_floating_point() else v for k, v in torch.load(weights).items()}
    state.update(input_resolution=torch.tensor(32), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    _torchscript_archive(state, tmp_path / "ViT-B-16.pt")
    with warnings.catch_warnings():   # torch's advice to call jit.load, and TorchScript's deprecation: not the user's
        warnings.simplefilter("error")
        loaded = load_encoder("clip-tiny", weights=tmp_path / "ViT-B-16.pt")
    x = batch(enc, images)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_images(x), enc.encode_images(x), atol=2e-2, rtol=0)  # fp16 weights


def test_torchscript_archive_with_payload_is_refused(tmp_path, marker):
    _torchscript_archive({"visual.proj": torch.zeros(2)}, tmp_path / "ok.pt")
    src = zipfile.ZipFile(tmp_path / "ok.pt")
    with zipfile.ZipFile(tmp_path / "ViT-B-16.pt", "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("/data.pkl"):
                data = pickle.dumps(Payload(marker), protocol=2)
            dst.writestr(item, data)
    with pytest.raises(EmbedkitError, match="refused to load"):
        load_state_dict(tmp_path / "ViT-B-16.pt")


def test_safetensors_cannot_carry_code(tmp_path):
    (tmp_path / "m.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json" + io.BytesIO(b"x").read())
    with pytest.raises(EmbedkitError, match="not a readable safetensors file"):
        load_state_dict(tmp_path / "m.safetensors")
