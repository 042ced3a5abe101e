"""Which build of llama.cpp this process runs: chosen once, at cold start, from the CPU's flags.

The x86_64 image carries llama-cpp-python's own build (AVX2: what Lambda promises on every x86_64
host) and, under ``LLAMA_CPP_BUILDS_DIR``, extra builds of the same version for CPUs with more
instruction sets (AVX-512: prompt evaluation about 1.5x faster where the host has it; see
docs/perf.md). Each extra build is a folder of shared libraries with a ``llama-cpp-build.json``
naming the CPU flags it needs (written by scripts/builds/llama.py from its flags file). llama-cpp-python
loads its libraries from ``$LLAMA_CPP_LIB_PATH`` when that is set at import, so the choice is made by
setting it before ``llama_cpp`` is first imported.

Rule: the build needing the most flags among those the CPU has all of; none: the packaged build. An
explicit ``LLAMA_CPP_LIB_PATH`` in the environment is left as it is.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The file in each extra build's folder that says what it is and what it needs.
BUILD_INFO = "llama-cpp-build.json"
#: The variable llama-cpp-python reads for its library folder.
LIB_PATH_VARIABLE = "LLAMA_CPP_LIB_PATH"
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class LlamaBuild:
    """One extra build: its name (from its flags file), its library folder and the CPU flags it needs."""

    name: str
    lib_dir: Path
    cpu_flags: frozenset[str]


@dataclass(frozen=True)
class BuildChoice:
    """What was chosen and why, for the cold-start log."""

    build: str
    lib_dir: str | None
    reason: str

    def log_fields(self) -> dict[str, Any]:
        return {"llama_build": self.build, "llama_lib_dir": self.lib_dir, "llama_build_reason": self.reason}


def host_cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str] | None:
    """The flags of the first processor in /proc/cpuinfo (x86's ``flags``); None when unreadable."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return None


def available_builds(root: Path) -> tuple[list[LlamaBuild], list[str]]:
    """The extra builds under ``root``, and a problem line for each folder that is not a usable build."""
    builds: list[LlamaBuild] = []
    problems: list[str] = []
    if not root.is_dir():
        return builds, [f"{root} is not a folder"]
    for folder in sorted(path for path in root.iterdir() if path.is_dir()):
        try:
            info = json.loads((folder / BUILD_INFO).read_text(encoding="utf-8"))
            flags = info["cpu_flags"]
            if not isinstance(flags, list) or not all(isinstance(flag, str) for flag in flags):
                raise ValueError("cpu_flags is not a list of strings")
            builds.append(LlamaBuild(str(info.get("name") or folder.name), folder, frozenset(flags)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"{folder}: {type(exc).__name__}: {exc}")
    return builds, problems


def choose(builds: list[LlamaBuild], host_flags: frozenset[str] | None) -> BuildChoice:
    """The build for a CPU with ``host_flags`` (pure: no environment, no files)."""
    if not builds:
        return BuildChoice("packaged", None, "no extra builds")
    if host_flags is None:
        return BuildChoice("packaged", None, "the CPU's flags are unreadable")
    runnable = [build for build in builds if build.cpu_flags <= host_flags]
    if not runnable:
        lacking = {build.name: sorted(build.cpu_flags - host_flags) for build in builds}
        return BuildChoice("packaged", None, f"the CPU lacks flags the extra builds need: {lacking}")
    best = max(runnable, key=lambda build: (len(build.cpu_flags), build.name))
    return BuildChoice(best.name, str(best.lib_dir), f"the CPU has all {len(best.cpu_flags)} flags it needs")


def select_build(builds_dir: Path | None, cpuinfo: Path = CPUINFO) -> BuildChoice:
    """Choose a build and point llama-cpp-python at it; call before ``llama_cpp`` is first imported."""
    global _applied
    explicit = os.environ.get(LIB_PATH_VARIABLE)
    if explicit and _applied is not None and explicit == _applied.lib_dir:
        return _applied  # chosen here before (reading the vocabulary, then loading the model): the same choice
    if explicit:
        return BuildChoice("explicit", explicit, f"{LIB_PATH_VARIABLE} is set in the environment")
    if builds_dir is None:
        return BuildChoice("packaged", None, "LLAMA_CPP_BUILDS_DIR is not set")
    builds, problems = available_builds(builds_dir)
    choice = choose(builds, host_cpu_flags(cpuinfo))
    if problems:
        choice = BuildChoice(choice.build, choice.lib_dir, f"{choice.reason}; skipped: {'; '.join(problems)}")
    if choice.lib_dir is not None:
        if "llama_cpp" in sys.modules:
            # Too late: the package has loaded its libraries already (only tests import it this early).
            return BuildChoice("packaged", None, f"llama_cpp was imported before {choice.build} could be chosen")
        os.environ[LIB_PATH_VARIABLE] = choice.lib_dir
        _applied = choice
    return choice


#: The choice this process applied to its environment, so that a second call reports it again.
_applied: BuildChoice | None = None
