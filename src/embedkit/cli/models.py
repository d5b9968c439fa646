"""`embedkit models`: the registered encoders."""

from __future__ import annotations

from embedkit.cli.console import table


def models() -> None:
    """List the encoders with embedding size, preprocessing and accepted weight formats."""
    from embedkit.models.catalog import listed     # the registry as data: the adapters import torch

    table("encoders (append -tiny for a seeded small variant; generic adapters take --weights W [--arch A] --name N)",
          ["name", "family", "dim", "preprocessing", "weights"],
          [[m["name"], m["family"], m["embed_dim"] or "from the checkpoint", m["preprocessing"], m["weight_formats"]]
           for m in listed()])
