"""A model's manifest (scripts/models/download.py): the shipped manifests valid and pinned, every field checked and
named when wrong, Hugging Face and PyPI sources.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from scripts.models import download as dm
from scripts.repository import ROOT, SERVED_MODEL
from tests.support.model_files import (
    FILENAME,
    MEMBER,
    MODEL_SHA256,
    WHEEL_PACKAGE,
    WHEEL_VERSION,
    manifest_data,
    pypi_manifest_data,
    write_manifest,
    write_pypi_manifest,
)

# --- manifests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted((ROOT / "layers" / "models").glob("*.json")), ids=lambda p: p.stem)
def test_load_manifest_shipped_manifests_are_valid_and_pinned(path: Path) -> None:
    manifest = dm.load_manifest(path)

    assert manifest.name == path.stem
    assert manifest.pinned
    assert manifest.size_bytes is not None
    assert manifest.filename.endswith(".gguf")
    # A PyPI source's version is an exact pin by validation; a hub revision must be a commit, not a branch.
    if isinstance(manifest.source, dm.HubSource):
        assert len(manifest.source.revision) == 40


def test_manifest_path_default_model_resolves_from_repository_root() -> None:
    assert dm.manifest_path(SERVED_MODEL) == ROOT / "layers" / "models" / f"{SERVED_MODEL}.json"
    assert dm.manifest_path(SERVED_MODEL).is_file()


def test_load_manifest_valid_manifest_gives_fields(tmp_path: Path) -> None:
    manifest = dm.load_manifest(write_manifest(tmp_path, source_notes="from a test"))

    data = manifest_data(source_notes="from a test")
    source = dm.HubSource(repo_id=data.pop("repo_id"), revision=data.pop("revision"))
    assert manifest == dm.Manifest(source=source, **data)
    assert manifest.path == tmp_path / "tiny-q4.json"


def test_load_manifest_pypi_source_gives_fields(tmp_path: Path) -> None:
    manifest = dm.load_manifest(write_pypi_manifest(tmp_path))

    assert manifest.source == dm.PypiSource(package=WHEEL_PACKAGE, version=WHEEL_VERSION, path=MEMBER)
    assert manifest.source.requirement == "tiny-model==1.0.0"
    assert manifest.filename == FILENAME


def test_load_manifest_null_sha256_is_unpinned(tmp_path: Path) -> None:
    manifest = dm.load_manifest(write_manifest(tmp_path, sha256=None, size_bytes=None, revision="main"))

    assert manifest.sha256 is None
    assert not manifest.pinned


@pytest.mark.parametrize("field", ["name", "repo_id", "filename", "revision", "sha256", "context_length", "license"])
def test_load_manifest_missing_field_is_named(tmp_path: Path, field: str) -> None:
    data = manifest_data()
    del data[field]
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data), encoding="utf-8")

    with pytest.raises(dm.ManifestError, match=rf"{field}: missing"):
        dm.load_manifest(path)


@pytest.mark.parametrize(
    "bad_hash",
    [
        MODEL_SHA256[:-1],  # 63 digits
        MODEL_SHA256.upper(),
        "sha256:" + MODEL_SHA256,
        "z" * 64,
        "",
        123,
    ],
    ids=["short", "uppercase", "prefixed", "not-hex", "empty", "number"],
)
def test_load_manifest_bad_hash_format_is_rejected(tmp_path: Path, bad_hash: object) -> None:
    with pytest.raises(dm.ManifestError, match=r"sha256: .* is not 64 lowercase hex digits"):
        dm.load_manifest(write_manifest(tmp_path, sha256=bad_hash))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"filename": "model.bin"}, "filename: 'model.bin' is not a plain file name ending in '.gguf'"),
        ({"filename": "../escape.gguf"}, "filename: '../escape.gguf' is not"),
        ({"repo_id": "no-owner"}, "repo_id: 'no-owner' is not of the form 'owner/name'"),
        ({"context_length": 0}, "context_length: must be a positive integer"),
        ({"context_length": True}, "context_length: must be a positive integer"),
        ({"size_bytes": "2 GB"}, "size_bytes: must be a positive integer or null"),
        ({"license": " "}, "license: must be a non-empty string"),
        ({"revison": "main"}, "revison: unknown field"),
    ],
    ids=["extension", "path", "repo-id", "zero", "bool", "text-size", "blank", "unknown-field"],
)
def test_load_manifest_invalid_value_is_named(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(dm.ManifestError, match=re.escape(message)):
        dm.load_manifest(write_manifest(tmp_path, **overrides))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            pypi_manifest_data(repo_id="example/tiny-gguf", revision="0" * 40),
            "pypi: cannot be combined with repo_id and revision; a manifest has one source",
        ),
        (pypi_manifest_data(revision="main"), "pypi: cannot be combined with revision"),
        ({k: v for k, v in pypi_manifest_data().items() if k != "pypi"}, "repo_id and revision, or pypi: missing"),
        (pypi_manifest_data(pypi="tiny-model==1.0.0"), "pypi: must be an object with package, version, path"),
        (
            pypi_manifest_data(pypi={"package": WHEEL_PACKAGE, "version": WHEEL_VERSION}),
            "pypi.path: missing",
        ),
        (
            pypi_manifest_data(pypi={"package": WHEEL_PACKAGE, "version": "1.0.0", "path": MEMBER, "sha256": ""}),
            "pypi.sha256: unknown field",
        ),
        (
            pypi_manifest_data(pypi={"package": "tiny model", "version": "1.0.0", "path": MEMBER}),
            "pypi.package: 'tiny model' is not a package name",
        ),
        (
            pypi_manifest_data(pypi={"package": WHEEL_PACKAGE, "version": ">=1.0", "path": MEMBER}),
            "pypi.version: '>=1.0' is not an exact version",
        ),
        (
            pypi_manifest_data(pypi={"package": WHEEL_PACKAGE, "version": "==1.0.0", "path": MEMBER}),
            "pypi.version: '==1.0.0' is not an exact version",
        ),
        (
            pypi_manifest_data(pypi={"package": WHEEL_PACKAGE, "version": "1.*", "path": MEMBER}),
            "pypi.version: '1.*' is not an exact version",
        ),
        (
            pypi_manifest_data(pypi={"package": WHEEL_PACKAGE, "version": 1, "path": MEMBER}),
            "pypi.version: must be a non-empty string",
        ),
        (
            pypi_manifest_data(pypi={"package": WHEEL_PACKAGE, "version": "1.0.0", "path": f"../{FILENAME}"}),
            "pypi.path: '../tiny-q4.gguf' is not a relative path inside the wheel",
        ),
        (
            pypi_manifest_data(pypi={"package": WHEEL_PACKAGE, "version": "1.0.0", "path": "tiny_model/other.gguf"}),
            "pypi.path: 'tiny_model/other.gguf' does not end in the file name 'tiny-q4.gguf'",
        ),
    ],
    ids=[
        "both-sources",
        "pypi-and-revision",
        "no-source",
        "not-an-object",
        "no-path",
        "unknown-key",
        "package-name",
        "range",
        "operator",
        "wildcard",
        "number",
        "path-escape",
        "path-other-file",
    ],
)
def test_load_manifest_invalid_source_is_named(tmp_path: Path, data: dict[str, Any], message: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data), encoding="utf-8")

    with pytest.raises(dm.ManifestError, match=re.escape(message)):
        dm.load_manifest(path)


def test_load_manifest_not_json_is_a_manifest_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json", encoding="utf-8")

    with pytest.raises(dm.ManifestError, match="cannot read manifest"):
        dm.load_manifest(path)
