"""The registered encoders as data, so that `embedkit models` lists them without importing torch.

``catalog.json`` is written from the registry (every adapter imported) by ``python -m embedkit.models.catalog``;
tests/models/test_catalog.py checks that it equals the live registry, so an adapter added without rewriting it
fails the suite with the command to run.
"""

from __future__ import annotations

import json
from pathlib import Path

FILE = Path(__file__).with_name("catalog.json")
FIELDS = ("name", "family", "embed_dim", "preprocessing", "weight_formats")


def listed() -> list[dict]:
    """The encoders as catalog.json lists them (name, family, embedding size or null, preprocessing, formats)."""
    return json.loads(FILE.read_text())


def from_registry() -> list[dict]:
    """The same rows from the live registry (imports every adapter, and so torch)."""
    from embedkit.models import registry

    return [{f: getattr(registry.get(n), f) or None for f in FIELDS} for n in registry.names()]


if __name__ == "__main__":
    FILE.write_text(json.dumps(from_registry(), indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {FILE}")
