"""The exception types the CLI turns into a clear message and an exit code instead of a traceback."""

from pathlib import Path


class EmbedkitError(Exception):
    """Bad input or a failed precondition; the message says what and what to do (exit code 2)."""


class LockedError(EmbedkitError):
    """Another process holds the lock on this work right now (exit code 3; ``--wait`` waits instead)."""


class CacheNotFound(EmbedkitError):
    """No complete store of a model matches what was asked; ``differ`` names the settings in which the stores
    that do exist differ (e.g. weights, precision), so a planner can say why a step is stale."""

    def __init__(self, message: str, differ: tuple[str, ...] = ()):
        super().__init__(message)
        self.differ = differ


class DamagedCache(EmbedkitError):
    """A store that cannot be read whole (truncated, corrupted, edited); ``embedkit extract`` moves it aside
    (``<file>.damaged``) and rebuilds it, so the fix is one command — named with the model, manifest and cache
    folder when the reader knows them (``advice``)."""

    def __init__(self, path, reason: str, *, model: str = "MODEL", manifest: str = "MANIFEST"):
        self.path, self.reason, self.model = Path(path), reason, model
        super().__init__(f"{path}: {reason}; rebuild it in one step: `embedkit extract --model {model} --manifest "
                         f"{manifest} --cache-dir {self.path.parent}` (the damaged file is kept beside it as .damaged)")

    def advice(self, manifest) -> "DamagedCache":
        """The same error, its command naming ``manifest``."""
        return DamagedCache(self.path, self.reason, model=self.model, manifest=str(manifest))
