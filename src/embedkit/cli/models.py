"""`embedkit models`: the registered encoders."""

from __future__ import annotations

from embedkit.cli.console import table


def models() -> None:
    """List the encoders with embedding size, preprocessing and accepted weight formats."""
    from embedkit.models import registry        # the adapters import torch: only when this command runs

    specs = [registry.get(n) for n in registry.names()]
    table("encoders (append -tiny for a seeded small variant; generic adapters take --weights W [--arch A] --name N)",
          ["name", "family", "dim", "preprocessing", "weights"],
          [[s.name, s.family, s.embed_dim or "from the checkpoint", s.preprocessing, s.weight_formats] for s in specs])
