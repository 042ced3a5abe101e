"""What identifies the model in result ids, read without loading it: its file name and content hash."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from handler.core.errors import ModelLoadError
from handler.core.files import file_sha256


@dataclass(frozen=True)
class ModelIdentity:
    """What identifies the model in result ids: its file name and content hash."""

    file: str
    sha256: str


@lru_cache(maxsize=4)
def model_identity(path: Path, sha256: str | None = None) -> ModelIdentity:
    """The model's identity without loading it: a pinned hash, its ``.sha256`` sidecar, or a hash of the file."""
    if sha256:
        return ModelIdentity(path.resolve().name, sha256)
    sidecar = path.with_name(path.name + ".sha256")
    if sidecar.is_file():
        pinned = sidecar.read_text(encoding="utf-8").split()
        if pinned and re.fullmatch(r"[0-9a-f]{64}", pinned[0]):
            return ModelIdentity(path.resolve().name, pinned[0])
    try:
        digest = file_sha256(path)
    except OSError as exc:
        raise ModelLoadError(f"cannot read the model file MODEL_PATH={str(path)!r}: {exc.strerror}") from exc
    return ModelIdentity(path.resolve().name, digest)
