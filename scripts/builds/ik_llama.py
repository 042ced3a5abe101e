"""Build the ik_llama.cpp fork with the CMake flags of a file in layers/build/, for side-by-side measurements.

    python -m scripts.builds.ik_llama                                         # the shipped flags of this host
    python -m scripts.builds.ik_llama --flags layers/build/cmake-amd64-avx512.args

ik_llama.cpp (github.com/ikawrakow/ik_llama.cpp, MIT) is a fork of llama.cpp with its own CPU matrix kernels
(IQK) and run-time repacking. The source comes from PyPI, the one registry every build host reaches: the sdist of
``ik-llama-cpp-python`` (pinned by version and sha256 below) vendors the fork under ``vendor/ik_llama.cpp``. Only
the fork's C/C++ tree is built, never that package's Python module: the benchmark drives the libraries through
ctypes (scripts/bench/engines.py), and llama-bench and llama-quantize come from the same tree.

What the sdist needs that it lacks (each was a failed build first):
- ``common/cmake/build-info-gen-cpp.cmake`` is missing (the build stops at "Generating build details"): the
  script written here fills ``common/build-info.cpp.in`` from ``cmake/build-info.cmake``, as upstream's does.
- The libraries carry no usable RPATH (``libggml.so`` is not found beside ``libllama.so``): the build sets
  ``$ORIGIN`` and ``$ORIGIN/../lib``, so ``lib/`` and ``bin/`` of the result work from any folder.
The fork's own options that the shipped flags do not name keep their defaults (IQK kernels on); GGML_OPENMP stays
off as in every shipped build.

The result is kept under ``~/.cache/llm-service/ik-llama/<key>/`` ({lib,bin}/), the key a hash of the sdist, the
flags and the compiler: a second run with the same flags costs nothing. Only the standard library is needed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from scripts.builds.llama import BuildError, build_name, cmake_flag_values, default_flags_file, read_flags
from scripts.models.download import sha256_file

PACKAGE = "ik-llama-cpp-python"
VERSION = "0.1.5"
#: sha256 of ik_llama_cpp_python-0.1.5.tar.gz as PyPI serves it (computed from the download, 42,257,843 bytes).
SDIST_SHA256 = "33c67eb99e4dcab5e611050433243815709b8b3067753f9ce18375013cf002ad"
SDIST_NAME = f"ik_llama_cpp_python-{VERSION}.tar.gz"
#: The fork's source inside the sdist.
VENDORED = "vendor/ik_llama.cpp"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llm-service" / "ik-llama"
#: The targets built: the libraries and the two tools the measurements use.
TARGETS = ("llama", "ggml", "llama-bench", "llama-quantize")
INFO_NAME = "ik-llama-build.json"
PIP_DOWNLOAD = ("-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:")

BUILD_INFO_SCRIPT = """\
# Written by scripts/builds/ik_llama.py: the sdist lacks this file. As upstream's: fill build-info.cpp.in.
include(${CMAKE_CURRENT_LIST_DIR}/../../cmake/build-info.cmake)
set(TEMPLATE_FILE "${CMAKE_CURRENT_LIST_DIR}/../build-info.cpp.in")
set(OUTPUT_FILE "${CMAKE_CURRENT_LIST_DIR}/../build-info.cpp")
configure_file(${TEMPLATE_FILE} ${OUTPUT_FILE})
"""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _sdist_url() -> str:
    """The sdist's download address from PyPI's JSON API (the index named by PIP_INDEX_URL is not consulted)."""
    with urllib.request.urlopen(f"https://pypi.org/pypi/{PACKAGE}/{VERSION}/json", timeout=60) as response:
        release = json.load(response)
    for entry in release["urls"]:
        if entry["packagetype"] == "sdist" and entry["filename"] == SDIST_NAME:
            return str(entry["url"])
    raise BuildError(f"PyPI lists no sdist {SDIST_NAME} for {PACKAGE} {VERSION}")


def fetch_sdist(cache: Path) -> Path:
    """The pinned sdist in the cache, downloaded once and checked against its sha256."""
    target = cache / SDIST_NAME
    if target.is_file() and sha256_file(target) == SDIST_SHA256:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        # pip knows the index this machine is configured for (a mirror, a proxy's CA bundle); PyPI's JSON API is
        # the fallback where pip cannot fetch.
        status = subprocess.run(
            [sys.executable, *PIP_DOWNLOAD, "--dest", scratch, f"{PACKAGE}=={VERSION}"],
            check=False,
        ).returncode
        downloaded = Path(scratch) / SDIST_NAME
        if status != 0 or not downloaded.is_file():
            urllib.request.urlretrieve(_sdist_url(), downloaded)
        actual = sha256_file(downloaded)
        if actual != SDIST_SHA256:
            raise BuildError(f"{SDIST_NAME}: sha256 {actual}, expected {SDIST_SHA256}: not the pinned file")
        downloaded.replace(target)
    return target


def compiler_version() -> str:
    """The C compiler's first version line: the key changes with the compiler."""
    compiler = os.environ.get("CC", "cc")
    try:
        return subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[
            0
        ]
    except (OSError, subprocess.CalledProcessError, IndexError) as exc:
        raise BuildError(f"no working C compiler ({compiler}): {exc}") from exc


def build_key(flags: Sequence[str]) -> str:
    """A hash of everything the build depends on: the sdist, the flags, the compiler."""
    material = json.dumps([SDIST_SHA256, cmake_args(flags), compiler_version(), TARGETS])
    return hashlib.sha256(material.encode()).hexdigest()[:16]


#: What mainline's GGML_AVX512 compiles with that the fork's adds not (it adds -mavx512f -mavx512bw only, and its IQK
#: flash-attention code then fails to compile: v_tanh on 512 bits needs AVX512DQ). Added where the flags say
#: GGML_AVX512=ON, so the fork gets the instruction sets of the shipped AVX-512 build, no more.
AVX512_PARITY = "-mavx512cd -mavx512vl -mavx512dq"


def cmake_args(flags: Sequence[str]) -> list[str]:
    """The shipped flags plus what a shared, relocatable build of the fork's tools needs."""
    parity = []
    if cmake_flag_values(flags).get("GGML_AVX512") == "ON":
        parity = [f"-DCMAKE_C_FLAGS={AVX512_PARITY}", f"-DCMAKE_CXX_FLAGS={AVX512_PARITY}"]
    return [
        *flags,
        *parity,
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=ON",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=ON",
        "-DLLAMA_BUILD_SERVER=OFF",
        "-DLLAMA_CURL=OFF",
        # Libraries and tools find each other wherever the folder is copied (the sdist sets no RPATH).
        "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON",
        "-DCMAKE_INSTALL_RPATH=$ORIGIN;$ORIGIN/../lib",
    ]


def unpacked_source(sdist: Path, cache: Path) -> Path:
    """The fork's source tree from the sdist, unpacked once, with the build-info script the sdist lacks."""
    root = cache / f"ik_llama_cpp_python-{VERSION}"
    source = root / VENDORED
    if not (root / ".unpacked").is_file():
        shutil.rmtree(root, ignore_errors=True)
        with tarfile.open(sdist) as archive:
            archive.extractall(cache, filter="data")
        script = source / "common" / "cmake" / "build-info-gen-cpp.cmake"
        if not script.is_file():
            script.parent.mkdir(parents=True, exist_ok=True)
            script.write_text(BUILD_INFO_SCRIPT, encoding="utf-8")
        (root / ".unpacked").touch()
    return source


def binding_root(cache: Path = DEFAULT_CACHE) -> Path:
    """The unpacked sdist's root: its ``ik_llama_cpp`` package declares the fork's C API for ctypes."""
    return unpacked_source(fetch_sdist(cache), cache).parents[1]


def build(flags_file: Path, cache: Path = DEFAULT_CACHE, jobs: int | None = None) -> Path:
    """The fork built with ``flags_file``: a folder with ``lib/`` (libllama, libggml) and ``bin/`` (the tools)."""
    flags = read_flags(flags_file)
    key = build_key(flags)
    result = cache / key
    info_path = result / INFO_NAME
    if info_path.is_file():
        return result
    sdist = fetch_sdist(cache)
    jobs = jobs or len(os.sched_getaffinity(0))
    _say(f"building ik_llama.cpp ({PACKAGE} {VERSION} sdist) with {flags_file.name} on {jobs} cores: minutes ...")
    # The source and the build tree stay beside the result until it is complete: a failed or interrupted build
    # resumes where it stopped (CMake rebuilds only what changed).
    source = unpacked_source(sdist, cache)
    tree = cache / f"{key}.build"
    subprocess.run(["cmake", "-S", str(source), "-B", str(tree), *cmake_args(flags)], check=True)
    subprocess.run(["cmake", "--build", str(tree), "--parallel", str(jobs), "--target", *TARGETS], check=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        staged = Path(scratch) / "result"
        (staged / "lib").mkdir(parents=True)
        (staged / "bin").mkdir()
        for library in tree.rglob("lib*.so*"):
            shutil.copy2(library, staged / "lib" / library.name, follow_symlinks=False)
        for tool in TARGETS[2:]:
            # CMake puts the tools in bin/ (examples/<name>/ is a source-named folder, not the program).
            found = tree / "bin" / tool
            if not found.is_file():
                raise BuildError(f"the build made no {found}")
            shutil.copy2(found, staged / "bin" / tool)
        (staged / INFO_NAME).write_text(
            json.dumps(
                {
                    "package": PACKAGE,
                    "version": VERSION,
                    "sdist_sha256": SDIST_SHA256,
                    "flags_file": flags_file.name,
                    "build": build_name(flags_file),
                    "flags": flags,
                    "compiler": compiler_version(),
                    "key": key,
                },
                indent=1,
            ),
            encoding="utf-8",
        )
        shutil.rmtree(result, ignore_errors=True)
        staged.replace(result)
    shutil.rmtree(tree, ignore_errors=True)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--flags", type=Path, help="flags file (default: layers/build/cmake-<host arch>.args)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"builds (default: {DEFAULT_CACHE})")
    parser.add_argument("--jobs", type=int, help="parallel compile jobs (default: the CPUs this process may use)")
    args = parser.parse_args(argv)
    try:
        folder = build(args.flags or default_flags_file(), args.cache, args.jobs)
    except (BuildError, OSError, subprocess.CalledProcessError) as exc:
        _say(f"error: {exc}")
        return 1
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
