"""The embedding cache: one HDF5 file per (model, manifest, settings), named by a content key.

``layout`` is the only module that knows the file's dataset names; ``extract`` fills it.
"""

from embedkit.cache.layout import Cache, cache_key, cache_key_of, find_cache, list_caches, read_cache, verify_cache

__all__ = ["Cache", "cache_key", "cache_key_of", "find_cache", "list_caches", "read_cache", "verify_cache"]
