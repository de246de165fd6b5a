"""The project's own error base: the CLI prints these as one line instead of a traceback."""


class ReplayAssetsError(Exception):
    """An error whose message alone tells the user what went wrong and where."""
