"""embedkit: how fair are CLIP-like foundation models on chest X-ray classification.

Data flow: data (manifests) -> models (encoders) -> cache (HDF5 embeddings)
-> heads / finetune (predictions) -> metrics -> report.
"""

__version__ = "0.1.0"

from embedkit.errors import EmbedkitError

__all__ = ["EmbedkitError", "__version__"]
