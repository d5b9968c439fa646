"""A killed head training continues from its last checkpoint and ends bitwise equal."""

import pytest
import torch

import embedkit.heads.trained as trained
from embedkit.heads.features import Split
from embedkit.heads.trained import HeadConfig, train_heads

from .conftest import separable


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_interrupted_training_resumes_bitwise(tmp_path, monkeypatch, kind):
    x, y, split = separable(n=240, d=8)
    part = {s: Split(torch.from_numpy(x[split == s]), torch.from_numpy(y[split == s]), None) for s in ("train", "val")}
    cfg = HeadConfig(kind=kind, epochs=35, lrs=(1e-3, 1e-2), weight_decays=(1e-4,), hidden=16)
    clean = train_heads(part["train"], part["val"], cfg, [0, 1], 3)
    ck = tmp_path / "ck.pt"
    real_save = trained._save

    def save_then_die(path, state, epoch):
        real_save(path, state, epoch)
        if epoch == 20:
            raise KeyboardInterrupt  # the kill, right after the second checkpoint

    monkeypatch.setattr(trained, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_heads(part["train"], part["val"], cfg, [0, 1], 3, checkpoint=ck)
    monkeypatch.setattr(trained, "_save", real_save)
    assert torch.load(ck, weights_only=True)["epoch"] == 20
    resumed = train_heads(part["train"], part["val"], cfg, [0, 1], 3, checkpoint=ck)
    for a, b in zip(clean, resumed):
        assert (a.lr, a.weight_decay, a.best_epoch, a.val_loss) == (b.lr, b.weight_decay, b.best_epoch, b.val_loss)
        assert all(torch.equal(p, q) for p, q in zip(a.params, b.params))
