"""Experiments on cached features: zero-shot, linear, MLP and kNN heads.

No image is decoded and no encoder loaded: everything reads one cache file.
"""
