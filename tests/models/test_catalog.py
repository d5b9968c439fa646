"""`embedkit models` lists the registry from catalog.json, without torch; the file must equal the registry."""

from embedkit.models.catalog import from_registry, listed


def test_the_catalog_is_the_registry():
    assert listed() == from_registry(), "an adapter changed: run `python -m embedkit.models.catalog`"


def test_the_catalog_names_every_family_with_its_size():
    rows = {m["name"]: m for m in listed()}
    assert rows["clip"]["embed_dim"] == 512 and rows["biomedclip"]["embed_dim"] == 512
    assert rows["open_clip"]["embed_dim"] is None                       # a generic adapter: from the checkpoint
