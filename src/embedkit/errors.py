"""The one exception type the CLI turns into a clear message instead of a traceback."""


class EmbedkitError(Exception):
    """Bad input or a failed precondition; the message says what and what to do."""
