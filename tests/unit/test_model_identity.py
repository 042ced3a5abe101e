"""The model's identity in result ids, read without loading it (handler/engine/identity.py): the sidecar's hash,
else the file's.
"""

from __future__ import annotations

from pathlib import Path

from handler.engine import model_identity


def test_model_identity_prefers_sidecar_hash(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"not really a model")
    (tmp_path / "m.gguf.sha256").write_text("a" * 64 + "  m.gguf\n")

    assert model_identity(model).sha256 == "a" * 64


def test_model_identity_hashes_file_without_sidecar(tmp_path: Path) -> None:
    import hashlib

    model = tmp_path / "n.gguf"
    model.write_bytes(b"bytes")

    assert model_identity(model).sha256 == hashlib.sha256(b"bytes").hexdigest()
