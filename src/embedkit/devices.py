"""Which device a process computes on, and how many decode workers feed it: one rule for extraction and
fine-tuning."""

from __future__ import annotations

import os

import torch

from embedkit.errors import EmbedkitError


def check_device(device: str) -> None:
    """Refuse a device this machine does not have, saying what to use instead."""
    if device == "auto":
        return
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise EmbedkitError(f"--device {device!r}: not a device name; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise EmbedkitError(f"--device {device}: no CUDA GPU is available on this machine; use --device cpu (or auto)")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise EmbedkitError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s), "
                                f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise EmbedkitError(f"--device {device}: MPS is not available here; use --device cpu (or auto)")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise EmbedkitError(f"--device {device}: unsupported device type; use auto, cpu or cuda")


def resolve_device(device: str) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU. Under torchrun a GPU without an index is
    this process's own (``cuda:LOCAL_RANK``), so the ranks of one node do not all land on cuda:0."""
    check_device(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda" and resolved.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return resolved


def auto_workers(device: torch.device) -> int:
    """Decode workers: several beside a GPU; none on CPU, where a worker process competes with the
    forward for the cores (measured on 2 cores, MedCLIP-RN50: 0.90 of the bare forward with one worker,
    0.98 decoding inline; docs/benchmarks.md)."""
    return min(8, max((os.cpu_count() or 1) - 1, 0)) if device.type == "cuda" else 0
