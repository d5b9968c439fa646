"""Which device a process computes on: one rule for extraction and fine-tuning."""

from __future__ import annotations

import os

import torch


def resolve_device(device: str) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU. Under torchrun a GPU without an index is
    this process's own (``cuda:LOCAL_RANK``), so the ranks of one node do not all land on cuda:0."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda" and resolved.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return resolved
