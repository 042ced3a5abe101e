"""How a model download reports: its errors, each with the exit code of scripts/models/download.py, and its progress.

Standard library only: the image's model stage runs the download without the service's dependencies.
"""

from __future__ import annotations

import sys

EXIT_FAILED = 1
EXIT_HUB_UNREACHABLE = 2


class DownloadError(Exception):
    """Base of the errors a model download reports; ``exit_code`` is what the command exits with."""

    exit_code = EXIT_FAILED


class ManifestError(DownloadError, ValueError):
    """The manifest is missing, not JSON, or a field is missing or invalid."""


class InputError(DownloadError):
    """A local model file is missing or is not a GGUF file."""


class ChecksumMismatch(DownloadError):
    """The file's sha256 (or size) differs from the manifest."""

    def __init__(self, message: str, *, expected: str, actual: str) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class HubError(DownloadError):
    """The source answered, but not with the file: repository, revision, package, version or file not found."""


class HubUnreachable(DownloadError):
    """The hub or the package index could not be reached: no network, offline mode, a proxy or TLS failure."""

    exit_code = EXIT_HUB_UNREACHABLE


def say(message: str) -> None:
    """A progress or error line on stderr (stdout carries only the model's final path)."""
    print(message, file=sys.stderr, flush=True)
