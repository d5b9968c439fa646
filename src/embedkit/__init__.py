"""embedkit: how fair are CLIP-like foundation models on chest X-ray classification.

Data flow: data (manifests) -> models (encoders) -> cache (HDF5 embeddings)
-> heads / finetune (predictions) -> metrics -> report.

In a notebook: ``embedkit.extract``, ``embedkit.probe``, ``embedkit.evaluate``, ``embedkit.results`` (a pandas
DataFrame) and ``embedkit.open_store`` (docs/api.md); importing embedkit loads no torch.
"""

__version__ = "0.1.0"

from embedkit.api import Store, evaluate, extract, open_store, probe, results
from embedkit.errors import EmbedkitError

__all__ = ["EmbedkitError", "Store", "__version__", "evaluate", "extract", "open_store", "probe", "results"]
