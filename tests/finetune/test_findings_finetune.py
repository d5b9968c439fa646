"""Fine-tuning on a binary / multi-label task: the cached-feature heads' masked BCE through images, per-finding
predictions and metrics, and no worse on validation than the linear probe it starts from (epoch 0)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from embedkit.cli.app import main
from embedkit.errors import EmbedkitError
from embedkit.finetune.train import FinetuneConfig, finetune
from embedkit.predictions import read_predictions
from embedkit.spec import Task


def test_lora_on_a_multilabel_phantom(tmp_path, capsys):
    assert main(["data", "phantom", "--out", str(tmp_path / "p"), "--task", "multilabel", "--per-group", "5",
                 "--size", "32", "--seed", "2"]) == 0
    cfg = FinetuneConfig(model="clip-tiny", manifest=tmp_path / "p/manifest.csv", mode="lora", runs_dir=tmp_path / "r",
                         seeds=(0,), epochs=2, lrs=(1e-3,), task=Task(kind="multilabel"), n_boot=20)
    [record] = finetune(cfg)
    pred = read_predictions(cfg.run_dir(0) / "predictions.csv")
    assert pred.truth is not None and pred.classes == ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
                                                       "Effusion", "Pneumothorax")
    assert ((pred.proba >= 0) & (pred.proba <= 1)).all() and record["metrics"]["settings"]["task"] == "multilabel"
    history = record["history"]
    assert record["selection"]["val_loss"] <= min([h["val_loss"] for h in history] + [np.inf]) + 1e-9
    assert "task" in record["config"] and record["init"]["kind"] == "probe"
    with pytest.raises(EmbedkitError, match=r"r: holds multilabel runs .* a multiclass run beside them"):
        finetune(replace(cfg, task=Task(), mode="full"))        # refused before any image is read
    assert main(["finetune", "--model", "clip-tiny", "--manifest", str(tmp_path / "p/manifest.csv"), "--lora",
                 "--runs-dir", str(tmp_path / "r2"), "--seeds", "0", "--epochs", "1", "--lrs", "1e-3",
                 "--task", "binary", "--positive", "Edema", "--quiet"]) == 0
    assert "test auroc macro" in capsys.readouterr().out
