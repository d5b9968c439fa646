"""The exception types the CLI turns into a clear message and an exit code instead of a traceback."""


class EmbedkitError(Exception):
    """Bad input or a failed precondition; the message says what and what to do (exit code 2)."""


class LockedError(EmbedkitError):
    """Another process holds the lock on this work right now (exit code 3; ``--wait`` waits instead)."""
