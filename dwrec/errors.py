"""dwrec's own error types: the CLI prints these as one clear message, never a traceback."""

from __future__ import annotations


class DwrecError(Exception):
    """An error the user can act on (bad input, missing file, bad flag).

    The message must name what is wrong and where: the file and line, the flag, or both.
    """

    exit_code = 1


class UsageError(DwrecError):
    """A flag or argument is wrong (exit code 2, as for a command-line usage error)."""

    exit_code = 2


class DataFormatError(DwrecError):
    """A raw or prepared file does not have the expected format."""

    def __init__(self, path, message: str, line: int | None = None):
        where = f"{path}" + (f", line {line}" if line is not None else "")
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


class ChecksumError(DwrecError):
    """A downloaded or given archive does not match its pinned sha256."""
