"""The fine-tuning head and its start: the cached-feature linear probe, fitted on the encoder's own
embeddings (LP-FT, Kumar et al. 2022). Fine-tuning then starts where the probe ends, so it can only
be selected when validation says it improved on it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from embedkit.finetune.data import Images


class Head(nn.Module):
    """The linear probe's head: standardise with fixed training-split statistics, then a linear layer.

    On L2-normalised embeddings a bare linear layer's logits are bounded by its weight norms, so it
    cannot become confident at encoder learning rates; standardising removes that bound."""

    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.linear = nn.Linear(dim, n_classes)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear((z - self.mean) / self.std)


@dataclass
class ProbeInit:
    """A fitted linear probe in the head's layout, and what was chosen for it on validation."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor          # (C, D)
    bias: torch.Tensor            # (C,)
    record: dict

    @property
    def n_classes(self) -> int:
        return self.weight.shape[0]

    def apply(self, head: Head) -> None:
        with torch.no_grad():
            head.mean.copy_(self.mean)
            head.std.copy_(self.std)
            head.linear.weight.copy_(self.weight)
            head.linear.bias.copy_(self.bias)


HEAD_INITS = ("probe", "random")


def random_init(probe: ProbeInit, seed: int) -> ProbeInit:
    """The paper's randomly initialised head (nn.Linear's default init, seeded), standardised with the same
    training statistics as the probe: fine-tuning's epoch 0 is then a random head, not the probe."""
    torch.manual_seed(seed)
    lin = nn.Linear(probe.weight.shape[1], probe.n_classes)
    return ProbeInit(probe.mean, probe.std, lin.weight.detach().clone(), lin.bias.detach().clone(),
                     {"kind": "random", "from": "nn.Linear's default initialisation, standardised input"})


def embed_split(tower: nn.Module, images: Images, device: torch.device, batch: int = 128) -> torch.Tensor:
    """The frozen tower's fp32 embeddings of one split (eval mode), on the CPU."""
    was_training = tower.training
    tower.eval()
    out = []
    with torch.no_grad():
        for x in images.batches([list(range(i, min(i + batch, len(images.rows)))) for i in range(0, len(images.rows), batch)]):
            out.append(tower(x.to(device)).float().cpu())
    tower.train(was_training)
    return torch.cat(out)


def fit_probe_init(features: dict[str, torch.Tensor], data: dict[str, Images], seed: int, n_classes: int) -> ProbeInit:
    """The paper's linear probe (heads/trained.py, default sweep) on these embeddings for ``seed``."""
    from embedkit.heads.features import Split
    from embedkit.heads.trained import HeadConfig, train_heads

    split = {s: Split(features[s], data[s].labels, data[s].rows) for s in ("train", "val")}
    probe = train_heads(split["train"], split["val"], HeadConfig(kind="linear"), [seed], n_classes)[0]
    w, b = probe.params
    return ProbeInit(probe.mean.clone(), probe.std.clone(), w.detach().T.contiguous(), b.detach().clone(),
                     {"kind": "probe", "from": "linear probe on the encoder's own embeddings", "lr": probe.lr,
                      "weight_decay": probe.weight_decay, "best_epoch": probe.best_epoch, "val_loss": probe.val_loss})
