"""Shared fixtures: a small phantom dataset, generated once per session."""

from __future__ import annotations

import os

import pytest

# No test may reach the network: loaders without --weights must fail at once with instructions.
os.environ["EMBEDKIT_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"

from embedkit.data.phantom import PhantomSpec, make_phantom
from embedkit.manifest import read_manifest


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory):
    """A 6-class phantom with 8 images per (class, group) cell at 32 px: 192 images."""
    out = tmp_path_factory.mktemp("phantom")
    make_phantom(out, PhantomSpec(per_group=8, size=32, seed=0))
    return out


@pytest.fixture(scope="session")
def phantom_manifest(phantom_dir):
    return read_manifest(phantom_dir / "manifest.csv")
