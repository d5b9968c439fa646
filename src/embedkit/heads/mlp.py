"""The MLP head: one hidden ReLU layer with dropout on standardised cached embeddings."""

from embedkit.heads.base import register
from embedkit.heads.trained import TrainedMethod


@register
class MLP(TrainedMethod):
    name, rank, kind = "mlp", 2, "mlp"
