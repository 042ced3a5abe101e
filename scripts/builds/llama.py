"""Build llama-cpp-python with the CMake flags of a file in layers/build/ and install it into a Python.

    python -m scripts.builds.llama --python .venv/bin/python                # the host architecture's shipped flags
    python -m scripts.builds.llama --python .venv-x/bin/python --flags layers/build/cmake-amd64-avx512.args
    python -m scripts.builds.llama --print-cmake-args [--flags FILE]        # what CMAKE_ARGS a flags file gives

The image compiles llama.cpp with ``layers/build/cmake-<arch>.args`` (the Dockerfile joins the same
file); a development machine must run that build too, not a native one: a native build uses
instruction sets Lambda never offers (AVX-512, AMX) and crashes in llama.cpp's AMX kernels on
hosts that have them (upstream llama.cpp issue #20824).

pip's wheel cache is keyed by the source distribution, not by ``CMAKE_ARGS``: a wheel built once
with other flags would be reused silently. So the wheel is built without pip's cache, into a
folder of its own whose name is a hash of the flags, the version and the interpreter, and installed
from there with ``--force-reinstall``; the installed build's key is recorded beside the interpreter,
so a changed flags file rebuilds and reinstalls, and an unchanged one costs nothing.

Only the standard library is needed (it runs before any virtualenv has packages).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from scripts.repository import ROOT

BUILD_DIR = ROOT / "layers" / "build"
REQUIREMENTS = ROOT / "layers" / "runtime" / "requirements.txt"
PACKAGE = "llama-cpp-python"
#: Machine names (``uname -m``) to the architecture names of the flags files (Docker's TARGETARCH).
ARCHITECTURES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
#: Where built wheels are kept between virtualenvs and clones of the repository on one machine.
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llm-service" / "llama-wheels"
#: Written into the virtualenv: the key of the build installed there.
MARKER_NAME = "llama-cpp-build.key"
#: Written beside unpacked libraries: the build's name and the CPU flags it needs (handler/engine/builds.py).
BUILD_INFO_NAME = "llama-cpp-build.json"
#: x86 CMake options of ggml and the /proc/cpuinfo flags of the instructions each compiles in
#: (ggml/src/ggml-cpu/CMakeLists.txt: GGML_AVX512 adds -mavx512f -mavx512cd -mavx512vl -mavx512dq -mavx512bw).
X86_CPU_FLAGS = {
    "GGML_SSE42": ("sse4_2",),
    "GGML_AVX": ("avx",),
    "GGML_AVX2": ("avx2",),
    "GGML_FMA": ("fma",),
    "GGML_F16C": ("f16c",),
    "GGML_BMI2": ("bmi2",),
    "GGML_AVX_VNNI": ("avx_vnni",),
    "GGML_AVX512": ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"),
    "GGML_AVX512_VBMI": ("avx512vbmi",),
    "GGML_AVX512_VNNI": ("avx512_vnni",),
    "GGML_AVX512_BF16": ("avx512_bf16",),
    "GGML_AMX_TILE": ("amx_tile",),
    "GGML_AMX_INT8": ("amx_int8",),
    "GGML_AMX_BF16": ("amx_bf16",),
}


class BuildError(Exception):
    """The flags file, the pin or the build failed; the message says which and why."""


def host_architecture() -> str:
    """The flags-file architecture of this machine (amd64 or arm64)."""
    machine = platform.machine().lower()
    try:
        return ARCHITECTURES[machine]
    except KeyError:
        raise BuildError(
            f"no llama.cpp flags for this machine's architecture {machine!r} (amd64 and arm64 only)"
        ) from None


def default_flags_file() -> Path:
    """``layers/build/cmake-<arch>.args`` for the host: the flags the image uses on this architecture."""
    return BUILD_DIR / f"cmake-{host_architecture()}.args"


def read_flags(path: Path) -> list[str]:
    """The flags of a flags file: one per line, ``#`` starts a comment, blank lines ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BuildError(f"cannot read the llama.cpp flags file {path}: {exc.strerror}") from exc
    flags = [line.split("#", 1)[0].strip() for line in lines]
    flags = [flag for flag in flags if flag]
    bad = [flag for flag in flags if not re.fullmatch(r"-D[A-Za-z0-9_]+=\S+", flag)]
    if bad:
        raise BuildError(f"{path}: every flag must be one -DNAME=VALUE without spaces; not {bad}")
    return flags


def cmake_flag_values(flags: Sequence[str]) -> dict[str, str]:
    """``{"GGML_AVX2": "ON", ...}`` from ``-DGGML_AVX2=ON`` flags."""
    return dict(flag[2:].split("=", 1) for flag in flags)


def required_cpu_flags(flags: Sequence[str]) -> list[str]:
    """The /proc/cpuinfo flags a CPU needs to run a build made with these flags (x86 options only)."""
    values = cmake_flag_values(flags)
    needed = {cpu for option, cpus in X86_CPU_FLAGS.items() if values.get(option) == "ON" for cpu in cpus}
    return sorted(needed)


def build_name(flags_file: Path) -> str:
    """``avx512`` for ``cmake-amd64-avx512.args``; the architecture for a shipped ``cmake-amd64.args``."""
    stem = flags_file.name.removesuffix(".args").removeprefix("cmake-")
    return stem.split("-", 1)[1] if "-" in stem else stem


def pinned_version(requirements: Path = REQUIREMENTS) -> str:
    """The exact llama-cpp-python version the runtime requirements pin."""
    text = requirements.read_text(encoding="utf-8")
    match = re.search(rf"^{re.escape(PACKAGE)}==([0-9][0-9A-Za-z.+-]*)\s*$", text, re.MULTILINE)
    if not match:
        raise BuildError(f"{requirements} pins no exact {PACKAGE}==VERSION")
    return match.group(1)


def interpreter_tag(python: str) -> str:
    """The target interpreter's implementation, version and platform (a wheel fits only these)."""
    code = "import sys, sysconfig; print(sys.implementation.cache_tag, sysconfig.get_platform())"
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(f"cannot run {python}: {result.stderr.strip() or result.returncode}")
    return result.stdout.strip()


def build_key(version: str, flags: Sequence[str], tag: str) -> str:
    """A name for one build: everything that changes the compiled library."""
    material = "\n".join([PACKAGE, version, tag, *flags])
    return hashlib.sha256(material.encode()).hexdigest()[:20]


def marker_path(python: str) -> Path:
    """Where the installed build's key is recorded: the virtualenv's root (or the interpreter's prefix)."""
    prefix = subprocess.run(
        [python, "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return Path(prefix) / MARKER_NAME


def ensure_wheel(version: str, flags: Sequence[str], python: str, cache: Path) -> Path:
    """The wheel for these flags, built now unless an earlier build with the same key is cached."""
    key = build_key(version, flags, interpreter_tag(python))
    folder = cache / key
    wheels = sorted(folder.glob("*.whl"))
    if wheels:
        _say(f"{PACKAGE} {version}: using the wheel built earlier with these flags ({wheels[0]})")
        return wheels[0]
    cache.mkdir(parents=True, exist_ok=True)
    cmake_args = " ".join(flags)
    _say(f"{PACKAGE} {version}: compiling llama.cpp (minutes) with CMAKE_ARGS={cmake_args}")
    with tempfile.TemporaryDirectory(prefix=f".{key}.", dir=cache) as staging:
        command = [
            python, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "--no-binary", PACKAGE,
            "--wheel-dir", staging, f"{PACKAGE}=={version}",
        ]  # fmt: skip
        environment = {**os.environ, "CMAKE_ARGS": cmake_args, "FORCE_CMAKE": "1"}
        # SOURCE_DATE_EPOCH switches GGML_NATIVE's default off; every flag is explicit, so it changes nothing.
        result = subprocess.run(command, env=environment, check=False)
        if result.returncode != 0:
            raise BuildError(f"building {PACKAGE}=={version} failed (exit {result.returncode}); see pip's output above")
        built = sorted(Path(staging).glob("*.whl"))
        if len(built) != 1:
            raise BuildError(f"pip wheel left {len(built)} wheels in {staging}, expected one")
        (Path(staging) / "cmake-args.txt").write_text(cmake_args + "\n", encoding="utf-8")
        # Renamed into place only when complete: an interrupted build never leaves a wheel under the key.
        os.replace(staging, folder)
    return folder / built[0].name


def install(python: str, flags_file: Path, cache: Path) -> Path:
    """Make ``python`` import llama-cpp-python built with ``flags_file``; returns the wheel used."""
    flags = read_flags(flags_file)
    version = pinned_version()
    wheel = ensure_wheel(version, flags, python, cache)
    marker = marker_path(python)
    key = wheel.parent.name
    if marker.is_file() and marker.read_text(encoding="utf-8").split()[0] == key:
        _say(f"{PACKAGE} {version} built with {flags_file.name} is installed already")
        return wheel
    # --force-reinstall: the version is the same whatever the flags; --no-deps: the requirements file brings them.
    command = [python, "-m", "pip", "install", "--quiet", "--force-reinstall", "--no-deps", str(wheel)]
    if subprocess.run(command, check=False).returncode != 0:
        raise BuildError(f"installing {wheel} into {python} failed; see pip's output above")
    marker.write_text(f"{key} {flags_file.name}\n", encoding="utf-8")
    _say(f"{PACKAGE} {version} built with {flags_file.name} installed into {python}")
    return wheel


def unpack_libraries(python: str, flags_file: Path, cache: Path, lib_dir: Path) -> Path:
    """Put the shared libraries of the build for ``flags_file`` into ``lib_dir`` (replacing what is there).

    llama-cpp-python loads its libraries from ``$LLAMA_CPP_LIB_PATH`` when set, so one installed
    package can run another build of llama.cpp: the benchmark compares builds this way, and the image
    ships extra builds this way (``llama-cpp-build.json`` says what CPU each needs; handler/engine/builds.py).
    """
    wheel = ensure_wheel(pinned_version(), read_flags(flags_file), python, cache)
    key_file = lib_dir / MARKER_NAME
    complete = key_file.is_file() and (lib_dir / BUILD_INFO_NAME).is_file()
    if complete and key_file.read_text(encoding="utf-8").split()[0] == wheel.parent.name:
        return lib_dir
    staging = lib_dir.with_name(lib_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as archive:
        members = [name for name in archive.namelist() if name.startswith("llama_cpp/lib/") and not name.endswith("/")]
        if not members:
            raise BuildError(f"{wheel} holds no llama_cpp/lib/ libraries")
        for name in members:
            with archive.open(name) as source, (staging / Path(name).name).open("wb") as target:
                shutil.copyfileobj(source, target)
    (staging / MARKER_NAME).write_text(f"{wheel.parent.name} {flags_file.name}\n", encoding="utf-8")
    flags = read_flags(flags_file)
    info = {
        "name": build_name(flags_file),
        "flags_file": flags_file.name,
        "key": wheel.parent.name,
        "cpu_flags": required_cpu_flags(flags),
    }
    (staging / BUILD_INFO_NAME).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(lib_dir, ignore_errors=True)
    os.replace(staging, lib_dir)
    _say(f"llama.cpp libraries built with {flags_file.name} unpacked into {lib_dir}")
    return lib_dir


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--flags", type=Path, help="flags file (default: layers/build/cmake-<host arch>.args)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to install into (a virtualenv's)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"built wheels (default: {DEFAULT_CACHE})")
    parser.add_argument(
        "--print-cmake-args", action="store_true", help="only print the CMAKE_ARGS the flags file gives"
    )
    parser.add_argument(
        "--lib-dir",
        type=Path,
        help="instead of installing: unpack the build's shared libraries here (for LLAMA_CPP_LIB_PATH)",
    )
    args = parser.parse_args(argv)
    try:
        flags_file = args.flags or default_flags_file()
        if args.print_cmake_args:
            print(shlex.join(read_flags(flags_file)))
            return 0
        python = shutil.which(args.python) or args.python
        if args.lib_dir is not None:
            unpack_libraries(python, flags_file, args.cache, args.lib_dir)
        else:
            install(python, flags_file, args.cache)
    except BuildError as exc:
        _say(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
