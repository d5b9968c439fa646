"""LoRA on every layer of an image encoder, with peft.

Module targets (attention blocks, projections, MLP linears, convolutions) get one adapter with
dropout; raw parameters named with ``param:`` get a second adapter through peft's
``target_parameters``, which peft only supports without dropout.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from embedkit.errors import EmbedkitError
from embedkit.models.base import LoraTargets

MODULES, PARAMETERS = "default", "params"


def parse_targets(text: str | None, default: LoraTargets) -> LoraTargets:
    """``--lora-targets out_proj,c_fc,param:in_proj_weight`` (``param:`` marks raw parameters)."""
    if not text:
        return default
    items = [t.strip() for t in text.split(",") if t.strip()]
    return LoraTargets(modules=tuple(t for t in items if not t.startswith("param:")),
                       parameters=tuple(t[6:] for t in items if t.startswith("param:")))


@contextmanager
def _two_adapters_expected():
    """peft warns when a second adapter joins the first; here that is the design (modules + parameters)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        yield


def _configs(targets: LoraTargets, rank: int, alpha: int, dropout: float):
    from peft import LoraConfig

    out = {}
    if targets.modules:
        out[MODULES] = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets.modules))
    if targets.parameters:
        out[PARAMETERS] = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_parameters=list(targets.parameters))
    return out


def apply_lora(tower: nn.Module, targets: LoraTargets, *, rank: int, alpha: int, dropout: float) -> dict[str, int]:
    """Inject LoRA adapters in place; freezes everything else. Returns adapted-layer counts."""
    from peft import inject_adapter_in_model

    for p in tower.parameters():
        p.requires_grad_(False)
    counts = {}
    for name, cfg in _configs(targets, rank, alpha, dropout).items():
        try:
            with _two_adapters_expected():
                inject_adapter_in_model(cfg, tower, adapter_name=name)
        except ValueError as exc:
            raise EmbedkitError(f"LoRA targets {sorted(cfg.target_modules or cfg.target_parameters)} matched nothing "
                                f"usable in this encoder ({exc})") from None
        counts[name] = sum(1 for n, _ in tower.named_parameters() if f"lora_A.{name}." in n)
    _activate_all(tower)
    for n, p in tower.named_parameters():
        p.requires_grad_("lora_" in n)
    return counts


class FrozenPins:
    """Keeps the frozen weights under peft's LoRA MultiheadAttention bitwise unchanged.

    That layer merges the adapter into ``in_proj_weight``/``out_proj.weight`` for every forward and
    subtracts it again, which leaves float rounding in the frozen weights (W + d - d != W); over
    thousands of steps it accumulates. ``restore()`` after each optimiser step copies the pristine
    values back, so the frozen weights stay exactly the published ones.
    """

    def __init__(self, tower: nn.Module):
        from peft.tuners.lora.layer import MultiheadAttention

        self.pins = []
        for m in tower.modules():
            if isinstance(m, MultiheadAttention):
                base = m.get_base_layer()
                self.pins.append((base, "in_proj_weight", base.in_proj_weight.detach().clone()))
                out = base.out_proj.get_base_layer()
                self.pins.append((out, "weight", out.weight.detach().clone()))

    def restore(self) -> None:
        with torch.no_grad():
            for module, name, value in self.pins:
                getattr(module, name).copy_(value)


def _activate_all(tower: nn.Module) -> None:
    """Injecting a second adapter makes it the only active one; every layer keeps all of its own."""
    from peft.tuners.lora import LoraLayer

    for m in tower.modules():
        if isinstance(m, LoraLayer):
            m.set_adapter(list(m.lora_A.keys()))


def save_adapters(tower: nn.Module, folder: Path, targets: LoraTargets, *, rank: int, alpha: int, dropout: float) -> None:
    """peft format: ``folder/<adapter>/adapter_config.json`` + ``adapter_model.safetensors``."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    for name, cfg in _configs(targets, rank, alpha, dropout).items():
        out = folder / name
        out.mkdir(parents=True, exist_ok=True)
        cfg.save_pretrained(str(out))
        state = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(tower, adapter_name=name).items()}
        save_file(state, str(out / "adapter_model.safetensors"))


def load_adapters(tower: nn.Module, folder: Path) -> None:
    """Inject the saved adapters into a fresh tower and load their weights."""
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    for sub in sorted(p for p in folder.iterdir() if (p / "adapter_config.json").is_file()):
        cfg = LoraConfig(**{k: v for k, v in json.loads((sub / "adapter_config.json").read_text()).items()
                            if k in LoraConfig.__dataclass_fields__})
        with _two_adapters_expected():
            inject_adapter_in_model(cfg, tower, adapter_name=sub.name)
        set_peft_model_state_dict(tower, load_file(str(sub / "adapter_model.safetensors")), adapter_name=sub.name)
    _activate_all(tower)
