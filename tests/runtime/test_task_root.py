"""The image's task root (scripts/builds/task_root.py) serves requests on its own, and the image's build inputs
agree."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.builds import llama as build_llama
from scripts.builds import task_root as build_task_root
from scripts.local.emulator import LambdaEmulator
from scripts.repository import ROOT
from tests.support.events import load_event
from tests.support.local_aws import DUMMY_AWS, Table

CMAKE_ARGS_DIR = ROOT / "layers" / "build"
# Docker's TARGETARCH names for the two Lambda architectures.
ARCHITECTURES = ("amd64", "arm64")
_FLAG = re.compile(r"-D([A-Z0-9_]+)=(\S+)")


# --- build_task_root without dependencies (fast) -----------------------------------------------------


def test_handler_only_task_root_holds_the_package_sources_and_rebuilds_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "task"

    build_task_root.build_task_root(out, install_deps=False)
    (out / "stale.txt").write_text("left from an earlier build")
    again = build_task_root.build_task_root(out, install_deps=False)

    assert again == out.resolve()
    sources = {path.relative_to(ROOT).as_posix() for path in (ROOT / "handler").rglob("*.py")}
    built = {path.relative_to(out).as_posix() for path in out.rglob("*.py")}
    assert built == sources
    # AND the console page's static files, as they are (the API function serves them: handler/entry/api_console.py)
    static = {
        path.relative_to(ROOT).as_posix()
        for suffix in build_task_root.STATIC_SUFFIXES
        for path in (ROOT / "handler").rglob(f"*{suffix}")
    }
    assert {f"handler/entry/console/{name}" for name in ("index.html", "app.js", "app.css")} <= static
    for name in static:
        assert (out / name).read_bytes() == (ROOT / name).read_bytes(), name
    assert not (out / "stale.txt").exists()
    assert not list(tmp_path.glob(".task.*")), "staging folders are removed"
    manifest = json.loads((out / build_task_root.MANIFEST_NAME).read_text())
    assert manifest["dependencies_installed"] is False
    assert manifest["file_count"] == len([path for path in out.rglob("*") if path.is_file()]) - 1
    # Bytecode exists for every module and is hash-based, unchecked (PEP 552 flags == 1): the image is immutable.
    pycs = list(out.rglob("*.pyc"))
    assert len(pycs) == len(sources)
    assert {int.from_bytes(pyc.read_bytes()[4:8], "little") for pyc in pycs} == {1}


def test_task_root_never_replaces_a_folder_it_did_not_build(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")

    with pytest.raises(build_task_root.TaskRootError, match="refusing to replace"):
        build_task_root.build_task_root(tmp_path, install_deps=False)

    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_task_root_cli_prints_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert build_task_root.main(["--out", str(tmp_path / "task"), "--no-deps"]) == 0
    assert capsys.readouterr().out.strip() == str((tmp_path / "task").resolve())


# --- the CMake flags of the image ----------------------------------------------------------------------


def _cmake_flags(arch: str) -> dict[str, str]:
    lines = (CMAKE_ARGS_DIR / f"cmake-{arch}.args").read_text().splitlines()
    flags = [line.split("#", 1)[0].strip() for line in lines]
    parsed = [_FLAG.fullmatch(flag) for flag in flags if flag]
    assert all(parsed), f"cmake-{arch}.args: every line is one -DNAME=VALUE flag or a comment"
    return {match.group(1): match.group(2) for match in parsed if match}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_cmake_flags_are_portable_and_self_contained(arch: str) -> None:
    flags = _cmake_flags(arch)

    assert flags["GGML_NATIVE"] == "OFF"
    assert flags["GGML_BACKEND_DL"] == "OFF"
    assert flags["GGML_OPENMP"] == "OFF"
    if arch == "amd64":
        assert {name for name, value in flags.items() if value == "ON"} == {
            "GGML_SSE42",
            "GGML_AVX",
            "GGML_AVX2",
            "GGML_FMA",
            "GGML_F16C",
            "GGML_BMI2",
        }
        assert flags["GGML_AVX512"] == "OFF"
    else:
        # Graviton2 (Neoverse N1) has no SVE, i8mm or BF16.
        assert flags["GGML_CPU_ARM_ARCH"] == "armv8.2-a+dotprod+fp16"


def test_dockerfile_reads_the_flags_of_the_target_architecture() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()

    assert "layers/build/cmake-${TARGETARCH}.args" in dockerfile
    shipped = {path.name for path in CMAKE_ARGS_DIR.glob("cmake-*.args")}
    assert {f"cmake-{arch}.args" for arch in ARCHITECTURES} <= shipped


# --- the real task root, served by a Python that sees nothing else ---------------------------------------


def _dev_pin(name: str) -> str:
    """The ``name==version`` line of requirements-dev.txt."""
    for line in (ROOT / "requirements-dev.txt").read_text().splitlines():
        if re.match(rf"{re.escape(name)}(\[.*\])?==", line):
            return line.split("#", 1)[0].strip()
    raise AssertionError(f"requirements-dev.txt pins no {name}")


def _system_python() -> Path:
    """The first python3 on PATH that is not a virtualenv's, resolved past version-manager shims."""
    venv_bin = Path(sys.prefix, "bin").resolve() if sys.prefix != sys.base_prefix else None
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and Path(d).resolve() != venv_bin]
    found = shutil.which("python3", path=os.pathsep.join(dirs))
    if found is None:
        pytest.skip("no python3 on PATH outside the virtualenv")
    probe = "import json, sys; print(json.dumps([sys.executable, sys.prefix != sys.base_prefix, sys.version_info[:2]]))"
    result = subprocess.run([found, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    executable, in_venv, version = json.loads(result.stdout)
    real = Path(executable).resolve()
    assert not in_venv, f"{found} runs inside a virtualenv"
    assert ROOT not in real.parents, f"{real} lives in the repository"
    # The task root holds compiled extensions (pydantic-core) for the interpreter that ran pip: this one.
    # Here that is 3.11 while the image runs 3.12; the image's build stage installs with its own 3.12.
    if tuple(version) != sys.version_info[:2]:
        pytest.skip(f"system {found} is Python {version[0]}.{version[1]}, the task root is built for {sys.version}")
    return real


@pytest.fixture(scope="module")
def task_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real task root: runtime requirements from pip and the handler.

    llama-cpp-python comes from the wheel `make setup` built with the image's flags (build_llama.py),
    as the image's build takes it from its own wheel folder: never a fresh (native) build from source.
    """
    flags = build_llama.read_flags(build_llama.default_flags_file())
    wheel = build_llama.ensure_wheel(build_llama.pinned_version(), flags, sys.executable, build_llama.DEFAULT_CACHE)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIP_FIND_LINKS", str(wheel.parent))
        patch.setenv("PIP_ONLY_BINARY", "llama-cpp-python")
        out: Path = build_task_root.build_task_root(
            tmp_path_factory.mktemp("image") / "task", build_task_root.DEFAULT_REQUIREMENTS
        )
    return out


@pytest.fixture(scope="module")
def runtime_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """awslambdaric in a folder of its own: Lambda's base image provides it, the task root does not."""
    target = tmp_path_factory.mktemp("runtime-client")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"]
    subprocess.run([*pip, "--target", str(target), _dev_pin("awslambdaric")], check=True, timeout=300)
    return target


@pytest.fixture(scope="module")
def isolated_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The system Python with -S: its own site-packages (which may hold moto, boto3...) stay off the path."""
    wrapper = tmp_path_factory.mktemp("python") / "python3"
    wrapper.write_text(f'#!/bin/sh\nexec "{_system_python()}" -S "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def _runtime_env(task_root: Path, runtime_client: Path) -> dict[str, str]:
    return {
        "PYTHONPATH": os.pathsep.join([str(task_root), str(runtime_client)]),
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _probe(python: Path, env: dict[str, str], cwd: Path, code: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8", "HOME": tempfile.gettempdir()}
    return subprocess.run(
        [str(python), "-c", code], env={**base, **env}, cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def task_root_emulator(
    task_root: Path, runtime_client: Path, isolated_python: Path, tiny_model: Path, results_table: Table, tmp_path: Path
) -> Iterator[LambdaEmulator]:
    env = {
        **DUMMY_AWS,
        **_runtime_env(task_root, runtime_client),
        "MODEL_PATH": str(tiny_model),
        "TABLE_NAME": results_table.name,
        "AWS_ENDPOINT_URL_DYNAMODB": results_table.endpoint_url,
        "N_THREADS": "2",
        "POWERTOOLS_SERVICE_NAME": "llm-service",
        "POWERTOOLS_METRICS_NAMESPACE": "LlmService",
    }
    emulator = LambdaEmulator(
        env=env, cwd=task_root, python=str(isolated_python), log_path=tmp_path / "emulator.log", memory_mb=10240
    )
    with emulator as running:
        yield running


def test_task_root_alone_serves_a_request_through_the_runtime_emulator(
    task_root: Path,
    runtime_client: Path,
    isolated_python: Path,
    task_root_emulator: LambdaEmulator,
    results_table: Table,
) -> None:
    # GIVEN the runtime's interpreter and environment see the task root and awslambdaric only
    env = _runtime_env(task_root, runtime_client)
    where = _probe(
        isolated_python,
        env,
        task_root,
        "import json, sys, handler, llama_cpp, awslambdaric; "
        "print(json.dumps([handler.__file__, llama_cpp.__file__, awslambdaric.__file__, sys.path]))",
    )
    assert where.returncode == 0, where.stderr
    handler_file, llama_file, ric_file, path = json.loads(where.stdout)
    assert task_root in Path(handler_file).parents
    assert task_root in Path(llama_file).parents
    assert runtime_client in Path(ric_file).parents
    assert not [entry for entry in path if entry and (Path(entry) == ROOT or ROOT in Path(entry).parents)]
    for absent in ("moto", "pytest", "gguf"):
        missing = _probe(isolated_python, env, task_root, f"import {absent}")
        assert "ModuleNotFoundError" in missing.stderr, f"{absent} is importable: {missing.stdout}{missing.stderr}"

    # WHEN the sample summarize event is invoked through the Runtime Interface Emulator
    answer: dict[str, Any] = task_root_emulator.invoke(load_event("summarize.json"))

    # THEN it is generated and stored
    assert answer["status"] == "DONE", answer
    metrics = answer["metrics"]
    assert metrics["cold_start"] is True
    assert metrics["load_ms"] > 0
    assert metrics["prompt_tokens"] > 0
    assert metrics["completion_tokens"] > 0
    assert metrics["eval_tokens_per_s"] > 0
    (item,) = results_table.items()
    assert item["id"] == answer["id"]
    assert item["status"] == "DONE"
    assert item["output"] == answer["output"]
    assert "Traceback" not in task_root_emulator.logs()
