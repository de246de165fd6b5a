"""The project's own errors: the CLI prints these as one line instead of a traceback."""

from typing import Any


class ReplayAssetsError(Exception):
    """An error whose message alone tells the user what went wrong and where."""


class FileFormatError(ReplayAssetsError, ValueError):
    """A raw file a reader cannot use; the one-line message names the file and the reason."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = " ".join(reason.split())
        super().__init__(f"{name}: {self.reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Executors pickle exceptions across processes; the default would call __init__(message).
        return (type(self), (self.name, self.reason))
