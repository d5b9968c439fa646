"""The heavy path: LoRA and full fine-tuning through the image encoder (not the cache).

Shares the manifest, encoders, run folders, predictions format and metrics with the cache path.
"""
