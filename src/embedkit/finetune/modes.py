"""Fine-tuning's methods, registered like the heads: which parameters of the image tower train, and what
the run folder keeps. ``lora`` adapts every layer with LoRA (peft) and saves the adapters; ``full`` trains
the whole tower and saves it. Registering a ``Mode`` makes its name a fine-tuning method of the study."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import nn

from embedkit.errors import EmbedkitError


@dataclass(frozen=True)
class Mode:
    name: str
    lrs: tuple[float, ...]                                # the default learning-rate sweep
    prepare: Callable[[nn.Module, object, object], tuple[dict, object]]   # (tower, cfg, encoder) -> (info, pins)
    save: Callable[[nn.Module, Path, object, object], None]               # (tower, run folder, cfg, encoder)
    frozen_batchnorm: bool = False                        # keep BatchNorm statistics fixed while training


_MODES: dict[str, Mode] = {}


def register(mode: Mode) -> Mode:
    _MODES[mode.name] = mode
    return mode


def names() -> tuple[str, ...]:
    return tuple(_MODES)


def get(name: str) -> Mode:
    if name not in _MODES:
        raise EmbedkitError(f"unknown fine-tuning method {name!r}: choose {', '.join(_MODES)}")
    return _MODES[name]


def _lora_prepare(tower, cfg, enc):
    from embedkit.finetune.lora import FrozenPins, apply_lora, parse_targets

    targets = parse_targets(cfg.lora_targets, enc.lora_targets)
    info = {"lora_layers": apply_lora(tower, targets, rank=cfg.rank, alpha=cfg.alpha, dropout=cfg.dropout),
            "targets": {"modules": list(targets.modules), "parameters": list(targets.parameters)}}
    return info, FrozenPins(tower)


def _lora_save(tower, folder, cfg, enc):
    from embedkit.finetune.lora import parse_targets, save_adapters

    save_adapters(tower, folder / "adapter", parse_targets(cfg.lora_targets, enc.lora_targets),
                  rank=cfg.rank, alpha=cfg.alpha, dropout=cfg.dropout)


def _full_prepare(tower, cfg, enc):
    for p in tower.parameters():
        p.requires_grad_(True)
    return {}, None


def _full_save(tower, folder, cfg, enc):
    from safetensors.torch import save_file

    save_file({k: v.contiguous().cpu() for k, v in tower.state_dict().items()}, str(folder / "encoder.safetensors"))


register(Mode("lora", (1e-4, 1e-3), _lora_prepare, _lora_save, frozen_batchnorm=True))
register(Mode("full", (1e-5, 1e-4), _full_prepare, _full_save))
