import torch

from embedkit.devices import resolve_device


def test_auto_is_the_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_torchrun_ranks_get_their_own_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert resolve_device("auto") == torch.device("cuda", 3)
    assert resolve_device("cuda") == torch.device("cuda", 3)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)  # an explicit index wins
    monkeypatch.delenv("LOCAL_RANK")
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cpu") == torch.device("cpu")


def test_a_missing_gpu_is_named_with_what_to_use(monkeypatch):
    import pytest

    from embedkit.errors import EmbedkitError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(EmbedkitError, match="no CUDA GPU.*--device cpu"):
        resolve_device("cuda")
    with pytest.raises(EmbedkitError, match="not a device name"):
        resolve_device("gpu0")
