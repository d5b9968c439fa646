"""The linear probe: one linear layer on standardised cached embeddings (the paper's recipe)."""

from embedkit.heads.base import register
from embedkit.heads.trained import TrainedMethod


@register
class Linear(TrainedMethod):
    name, rank, kind = "linear", 1, "linear"
