"""File helpers shared by the handler and the scripts; standard library only, so any script can import it.

scripts/models/download.py keeps its own sha256_file: the image's model stage runs it without handler/.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_HASH_CHUNK = 8 * 1024 * 1024


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 8 MiB chunks (a model is gigabytes: never read whole)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
