"""scripts/models/download.py without network: hashing, --local, the sidecar, and fetching from the Hugging Face Hub
(its client faked).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from scripts.models import download as dm
from scripts.models import sources as model_sources
from scripts.repository import SERVED_MODEL
from tests.support.model_files import (
    FILENAME,
    MODEL_BYTES,
    MODEL_SHA256,
    files_in,
    write_manifest,
    write_pypi_manifest,
)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A small local 'model' file outside the output folder."""
    path = tmp_path / "given" / "model.gguf"
    path.parent.mkdir()
    path.write_bytes(MODEL_BYTES)
    return path


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
    assert SERVED_MODEL in capsys.readouterr().err


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
