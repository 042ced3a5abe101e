"""Assemble the Lambda task root: the handler package plus the runtime requirements, pruned and compiled.

    python -m scripts.builds.task_root --out DIR [--requirements FILE] [--no-deps]

DIR receives ``handler/`` (its ``.py`` files and the console page's static files) and, unless
``--no-deps``, every distribution of the requirements file (default ``layers/runtime/requirements.txt``)
installed with ``pip install --target`` by the running interpreter's pip, so a llama-cpp-python wheel that
pip built before comes from its wheel cache. The result holds only what the function needs at run time, then it is
byte-compiled, and ``DIR/.task-root.json`` describes it. DIR is built beside itself and swapped in
whole, so re-running replaces it cleanly; a non-empty DIR that is not a task root is never replaced.

The bytecode is written for the running interpreter, so run this with the image's own Python (the
Dockerfile's build stage does). The final path goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import py_compile
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from scripts.repository import ROOT

HANDLER_DIR = ROOT / "handler"
DEFAULT_REQUIREMENTS = ROOT / "layers" / "runtime" / "requirements.txt"
MANIFEST_NAME = ".task-root.json"
#: What of handler/ the function serves besides its modules: the console page's files (handler/entry/console/).
STATIC_SUFFIXES = (".html", ".js", ".css")

# Top-level folders that wheels install beside their packages: console scripts (whose shebang names the
# build interpreter), C headers, CMake and pkg-config files, and llama-cpp-python's second copy of its
# shared libraries (it loads them from llama_cpp/lib). Removed only when they hold no Python source.
_DATA_DIRS = ("bin", "include", "lib", "share")
# Installers pulled in as dependencies; kept when the requirements name them.
_BUILD_TOOLS = ("pip", "setuptools", "wheel", "pkg_resources", "_distutils_hack")
# Imports the task root must satisfy on its own; run with -S so nothing else is on the path.
_IMPORT_CHECK = """
import json, sys
import handler.entry.api, handler.entry.batch_bucket, handler.entry.direct, handler.entry.schedule, handler.entry.worker
import handler.entry.streaming_runtime_client
import llama_cpp
print(json.dumps({
    "llama_cpp_version": llama_cpp.__version__,
    "llama_cpp_file": llama_cpp.__file__,
    "system_info": llama_cpp.llama_print_system_info().decode().strip(),
}))
"""


class TaskRootError(Exception):
    """The task root cannot be built: bad arguments, a failed install, or a failed import check."""


def build_task_root(out: Path, requirements: Path = DEFAULT_REQUIREMENTS, install_deps: bool = True) -> Path:
    """Build the task root in ``out`` (replacing a previous one) and return its resolved path."""
    out = Path(out).resolve()
    requirements = Path(requirements).resolve()
    _check_target(out)
    if install_deps and not requirements.is_file():
        raise TaskRootError(f"requirements file not found: {requirements}")

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        pruned: list[str] = []
        check: dict[str, Any] | None = None
        if install_deps:
            _pip_install(staging, requirements)
            pruned = _prune(staging, _requirement_names(requirements))
        _copy_handler(HANDLER_DIR, staging / "handler")
        if install_deps:
            check = _import_check(staging)
        _compile(staging)
        _make_readable(staging)
        _write_manifest(staging, requirements if install_deps else None, pruned, check)
        _swap(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _check_target(out: Path) -> None:
    if out == Path(out.anchor) or out in HANDLER_DIR.parents or out == HANDLER_DIR or HANDLER_DIR in out.parents:
        raise TaskRootError(f"refusing to build the task root in {out}: it overlaps the handler sources")
    if out.exists():
        if not out.is_dir():
            raise TaskRootError(f"{out} exists and is not a folder")
        if any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
            raise TaskRootError(f"refusing to replace {out}: it is not empty and has no {MANIFEST_NAME}")


def _pip_install(target: Path, requirements: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--target",
        str(target),
        "--requirement",
        str(requirements),
        # Bytecode is compiled once the tree is final (see _compile).
        "--no-compile",
        "--no-input",
        "--disable-pip-version-check",
        "--no-warn-script-location",
        "--progress-bar",
        "off",
    ]
    if os.environ.get("CMAKE_ARGS"):
        # pip's wheel cache is keyed by the source, not by the build flags: asking for flags means a fresh build.
        command.append("--no-cache-dir")
        _say(f"CMAKE_ARGS is set ({os.environ['CMAKE_ARGS']}); pip's wheel cache is bypassed")
    _say("installing " + ", ".join(_requirement_lines(requirements)) + f" into {target}")
    # Our own stdout carries only the final path, so pip's output goes to stderr (file descriptor 2).
    sys.stderr.flush()
    result = subprocess.run(command, stdout=2, check=False)
    if result.returncode != 0:
        raise TaskRootError(f"pip install into {target} failed with exit code {result.returncode}")


def _requirement_lines(requirements: Path) -> list[str]:
    """The requirement specifiers of a requirements file (no comments, blank lines or options)."""
    lines = []
    for raw in requirements.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-")):
            lines.append(line)
    return lines


def _requirement_names(requirements: Path) -> set[str]:
    names = set()
    for line in _requirement_lines(requirements):
        name = line
        for separator in ("[", "=", "<", ">", "!", "~", ";", " ", "@"):
            name = name.split(separator, 1)[0]
        names.add(_normalize(name))
    return names


def _normalize(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def _prune(root: Path, required: set[str]) -> list[str]:
    """Delete what the function never loads; returns the removed paths, relative to ``root``."""
    removed: list[Path] = []
    for name in _DATA_DIRS:
        folder = root / name
        # A folder with Python source could be a (namespace) package; bin/ only needs to be no package.
        keep = "__init__.py" if name == "bin" else "*.py"
        if folder.is_dir() and not any(folder.rglob(keep)):
            removed.append(folder)
    for entry in root.iterdir():
        stem = _normalize(entry.name.split("-", 1)[0].removesuffix(".dist-info"))
        if stem in _BUILD_TOOLS and stem not in required:
            removed.append(entry)
    if (root / "distutils-precedence.pth").is_file() and "setuptools" not in required:
        removed.append(root / "distutils-precedence.pth")
    # Test suites shipped inside packages (numpy's are the bulk); a top-level "tests" is left alone.
    removed.extend(
        folder for folder in root.glob("*/**/tests") if folder.is_dir() and (folder.parent / "__init__.py").is_file()
    )
    removed.extend(root.rglob("__pycache__"))
    for path in removed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    relative = sorted({path.relative_to(root).as_posix() for path in removed if "__pycache__" not in path.parts})
    if relative:
        _say("pruned " + ", ".join(relative))
    return relative


def _copy_handler(source: Path, target: Path) -> None:
    files = sorted(
        path
        for path in source.rglob("*")
        if path.suffix in (".py", *STATIC_SUFFIXES)
        and path.is_file()
        and "__pycache__" not in path.relative_to(source).parts
    )
    if not (source / "__init__.py").is_file():
        raise TaskRootError(f"{source} is not a Python package (no __init__.py)")
    shutil.rmtree(target, ignore_errors=True)
    for path in files:
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)


def _import_check(root: Path) -> dict[str, Any]:
    """Import the handler and llama.cpp from ``root`` alone, so a pruning mistake fails the build."""
    with tempfile.TemporaryDirectory(prefix="task-root-home-") as home:
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "LANG": "C.UTF-8",
            "HOME": home,
            "PYTHONPATH": str(root),
            "PYTHONNOUSERSITE": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            # The handler validates its settings at import; without MODEL_PATH it would warn here.
            "POWERTOOLS_LOG_LEVEL": "ERROR",
        }
        result = subprocess.run(
            [sys.executable, "-S", "-c", _IMPORT_CHECK],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        raise TaskRootError(f"the task root does not import on its own:\n{result.stderr.strip()}")
    found: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    location = Path(found.pop("llama_cpp_file")).resolve()
    if root.resolve() not in location.parents:
        raise TaskRootError(f"llama_cpp was imported from {location}, outside the task root")
    _say(f"llama.cpp {found['llama_cpp_version']}: {found['system_info']}")
    return found


def _compile(root: Path) -> None:
    # Lambda's task root is read-only, so modules without bytecode would be compiled again on every
    # cold start. Unchecked-hash pycs are never compared with their source: the image does not change.
    compileall.compile_dir(
        root,
        quiet=2,
        workers=0,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )


def _make_readable(root: Path) -> None:
    # Lambda runs the function as a non-root user: everything must be world-readable whatever the umask.
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        wanted = mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
        if path.is_dir() or mode & stat.S_IXUSR:
            wanted |= stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
        if wanted != mode:
            path.chmod(stat.S_IMODE(wanted))


def _write_manifest(root: Path, requirements: Path | None, pruned: list[str], check: dict[str, Any] | None) -> None:
    files = [path for path in root.rglob("*") if path.is_file() and not path.is_symlink()]
    installed = {
        dist.metadata["Name"]: dist.version
        for dist in sorted(metadata.distributions(path=[str(root)]), key=lambda d: d.metadata["Name"].lower())
    }
    manifest = {
        "python": {
            "implementation": sys.implementation.name,
            "version": platform.python_version(),
            "cache_tag": sys.implementation.cache_tag,
            "machine": platform.machine(),
        },
        "dependencies_installed": requirements is not None,
        "requirements": _requirement_lines(requirements) if requirements is not None else [],
        "installed": installed,
        "llama_cpp": check,
        "pruned": pruned,
        "bytecode": "unchecked-hash",
        "file_count": len(files),
        "total_bytes": sum(path.stat().st_size for path in files),
    }
    path = root / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    path.chmod(0o644)


def _swap(staging: Path, out: Path) -> None:
    previous = out.with_name(f".{out.name}.previous")
    shutil.rmtree(previous, ignore_errors=True)
    if out.exists():
        out.rename(previous)
    staging.rename(out)
    shutil.rmtree(previous, ignore_errors=True)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Assemble the Lambda task root: handler package, runtime requirements, manifest.",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to build (replaced if it is a task root)")
    parser.add_argument(
        "--requirements",
        type=Path,
        default=DEFAULT_REQUIREMENTS,
        help="runtime requirements file (default: layers/runtime/requirements.txt)",
    )
    parser.add_argument("--no-deps", action="store_true", help="copy the handler package only; install nothing")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        out = build_task_root(args.out, args.requirements, install_deps=not args.no_deps)
    except TaskRootError as exc:
        _say(f"error: {exc}")
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
