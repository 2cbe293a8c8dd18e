"""The one exception family that the CLI and the service turn into a clear message.

Anything the user can get wrong (a missing file, a bad recipe key, an incomplete bundle)
raises a subclass of `NmtError` whose message names the file or key; the CLI prints it on
one line and exits non-zero, with no traceback.
"""


class NmtError(Exception):
    """A problem the user can fix; the message is shown to them as it is."""


class ConfigError(NmtError):
    """A recipe or option is invalid; the message names the key.

    `key` is that key on its own where one option is at fault (``n_best``), so a caller that
    reports fields, like the service, need not parse the message.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class DataError(NmtError):
    """A corpus file is missing, empty, misaligned or unreadable; the message names the file."""


class BundleError(NmtError):
    """A model bundle is missing or incomplete; the message names the folder or file."""


class NoAttention(NmtError):
    """Alignments or attention were asked of a model, or a backend, that has none to give."""
