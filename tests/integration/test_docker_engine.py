"""scripts/docker/engine.sh where no engine answers and none can be installed, and its `stop`.

The engine itself is exercised by the image tests (`make test-image`); these run without one, with a
`docker` and an `id` on PATH that play a machine without an engine and a user without root.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from scripts.repository import ROOT

SCRIPT = ROOT / "scripts" / "docker" / "engine.sh"


def _fake_bin(tmp_path: Path, uid: int) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(
        "#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock.' >&2\nexit 1\n"
    )
    fake_id = bin_dir / "id"
    fake_id.write_text(f"#!/bin/sh\necho {uid}\n")
    for path in (docker, fake_id):
        path.chmod(0o755)
    return bin_dir


def _run(tmp_path: Path, bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "DOCKER_ENGINE_DIR": str(tmp_path / "state"),
        "HOME": str(tmp_path),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, check=False, timeout=60
    )


def test_without_an_engine_and_without_root_it_fails_saying_why(tmp_path: Path) -> None:
    result = _run(tmp_path, _fake_bin(tmp_path, uid=1000), "ensure")

    assert result.returncode == 1
    assert "Cannot connect to the Docker daemon" in result.stderr
    assert "installing one needs root" in result.stderr or "this is not Debian" in result.stderr
    # Nothing was installed or started.
    assert not (tmp_path / "state" / "dockerd.pid").exists()


def test_stop_stops_nothing_it_did_not_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    # A pid file naming a process that is not a dockerd this script started (this test's own shell).
    (state / "dockerd.pid").write_text(f"{os.getpid()} 1\n")

    result = _run(tmp_path, _fake_bin(tmp_path, uid=0), "stop")

    assert result.returncode == 0, result.stderr
    assert "nothing stopped" in result.stderr
    assert not (state / "dockerd.pid").exists()


def test_status_reports_no_engine(tmp_path: Path) -> None:
    result = _run(tmp_path, _fake_bin(tmp_path, uid=0), "status")

    assert result.returncode == 0, result.stderr
    assert "engine: none answers" in result.stdout
    assert "started by this script: nothing running" in result.stdout
