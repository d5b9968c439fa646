"""A stacked training run's state, saved every few epochs and resumed after a kill so that the rerun ends
bitwise equal to an uninterrupted one (weights, optimiser, the best members so far, every RNG)."""

from __future__ import annotations

import os
from pathlib import Path

import torch


FORMAT = 2  # 2: the optimiser's moments as tensors (heads.stacked); a checkpoint of another format is not resumed


def save(path, state: dict, epoch: int) -> None:
    """Atomically write everything the next epoch depends on (weights, optimiser, best, RNG)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save({"format": FORMAT, "epoch": epoch, "params": [p.detach() for p in state["params"]], "opt": state["opt"].state(),
                "best_loss": state["best_loss"], "best_epoch": state["best_epoch"], "best": state["best"],
                "best_score": state["best_score"],
                "gens": [g.get_state() for g in state["gens"]]}, tmp)
    os.replace(tmp, path)


def resume(path, state: dict) -> int:
    """Load a checkpoint into ``state`` in place; returns the epoch to continue from (0: none)."""
    if path is None or not Path(path).is_file():
        return 0
    ck = torch.load(path, weights_only=True)
    if ck.get("format") != FORMAT:
        return 0
    with torch.no_grad():
        for dst, src in zip(state["params"] + state["best"], ck["params"] + ck["best"]):
            dst.copy_(src)
    state["opt"].load(ck["opt"])
    state["best_loss"].copy_(ck["best_loss"])
    state["best_score"].copy_(ck.get("best_score", ck["best_loss"]))
    state["best_epoch"].copy_(ck["best_epoch"])
    for g, s in zip(state["gens"], ck["gens"]):
        g.set_state(s)
    return int(ck["epoch"])
