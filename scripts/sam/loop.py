"""What the local SAM loop's steps share: its paths, its error and log line, and the programs it drives (sam, docker).

scripts/sam/__main__.py is the command; each step has its module (template, build, aws, invoke, api).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from scripts.local.moto_server import DEFAULT_REGION, DUMMY_CREDENTIALS
from scripts.repository import ROOT

LOCAL_DIR = ROOT / ".aws-sam" / "local"
LOCAL_TEMPLATE = LOCAL_DIR / "template.yaml"
BUILT_TEMPLATE = ROOT / ".aws-sam" / "build" / "template.yaml"
ENV_FILE = LOCAL_DIR / "env.json"
BUILD_LOG = LOCAL_DIR / "build.log"


class LoopError(RuntimeError):
    """A step of the local loop failed; the message says which and why."""


def log(message: str) -> None:
    print(f"[sam-local] {message}", file=sys.stderr, flush=True)


def run_logged(
    command: list[str], log_path: Path, quiet: bool, env: Mapping[str, str] | None = None
) -> tuple[int, float]:
    """Run a long build from the repository root, its output written to ``log_path`` as it comes (and to
    stderr unless ``quiet``); its exit status and the seconds it took."""
    started = time.monotonic()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w", encoding="utf-8") as build_log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert process.stdout is not None
        for line in process.stdout:
            build_log.write(line)
            if not quiet:
                sys.stderr.write(line)
        returncode = process.wait()
    return returncode, time.monotonic() - started


def sam_command() -> list[str]:
    """The SAM CLI: $SAM_CLI, else .venv-sam's, else `sam` on PATH."""
    given = os.environ.get("SAM_CLI")
    if given:
        return [given]
    local = ROOT / ".venv-sam" / "bin" / "sam"
    if local.is_file():
        return [str(local)]
    found = shutil.which("sam")
    if found is None:
        raise LoopError("the SAM CLI is not installed: run `make setup` (it installs it into .venv-sam)")
    return [found]


def sam_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for sam: no telemetry, dummy credentials (the containers get them), one region."""
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", **DUMMY_CREDENTIALS}
    env.update({"AWS_DEFAULT_REGION": DEFAULT_REGION, "AWS_REGION": DEFAULT_REGION})
    # sam lets the shell override the variables a function declares: keep this shell's out of it.
    for name in (
        "TABLE_NAME",
        "WORK_QUEUE_URL",
        "BATCH_BUCKET",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_ENDPOINT_URL_SQS",
        "AWS_ENDPOINT_URL_S3",
        "MODEL_PATH",
    ):
        env.pop(name, None)
    env.update(extra or {})
    return env


def docker_answers() -> str | None:
    """None when `docker info` works, else why not."""
    if shutil.which("docker") is None:
        return "no docker command on PATH"
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    return None if result.returncode == 0 else (result.stderr.strip() or result.stdout.strip())[:500]


def require_docker() -> None:
    problem = docker_answers()
    if problem is not None:
        raise LoopError(f"no Docker engine: {problem} (scripts/docker/engine.sh installs or starts one)")


def image_exists(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True, check=False).returncode == 0


def image_size_mb(name: str) -> float:
    out = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Size}}", name], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip()) / 1e6


def docker_gateway() -> str:
    """The address of this host on Docker's default bridge: where `sam local` containers reach a local server."""
    out = subprocess.run(
        ["docker", "network", "inspect", "bridge", "--format", "{{range .IPAM.Config}}{{.Gateway}} {{end}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    gateways = [word for word in out.stdout.split() if word.count(".") == 3]
    if out.returncode != 0 or not gateways:
        raise LoopError(f"cannot read the Docker bridge's gateway address: {out.stderr.strip() or out.stdout.strip()}")
    return gateways[0]
