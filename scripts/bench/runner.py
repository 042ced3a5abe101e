"""Running the configurations: a fresh interpreter each, the build it loaded, and the machine they ran on."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from scripts.bench.configs import CHILD_TIMEOUT_S


def build_label(system_info: str) -> str:
    """A short name for a llama.cpp build from its system info: the widest instruction set compiled in.

    ``llama_print_system_info`` lists the CPU features the library was compiled with (``AVX2 = 1``);
    ggml's CPU backend reports compile-time flags there, not the host's.
    """
    features = {
        key.strip()
        for key, _, value in (item.partition("=") for item in system_info.split("|"))
        if value.strip() == "1"
    }
    for feature in ("AVX512", "AVX2", "AVX", "SVE", "DOTPROD", "NEON"):
        if feature in features:
            return feature.lower()
    return "generic"


def loaded_build() -> dict[str, Any]:
    """Which llama.cpp this process loaded: the library folder, the files mapped, the build's features."""
    import llama_cpp

    override = os.environ.get("LLAMA_CPP_LIB_PATH")
    system_info = llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip()
    # The files the loader really mapped: libllama finds libggml-cpu through its RUNPATH, next to it.
    mapped = {
        line.split(maxsplit=5)[-1]
        for line in Path("/proc/self/maps").read_text(encoding="utf-8").splitlines()
        if any(f"/lib{name}" in line for name in ("llama.so", "ggml"))
    }
    return {
        "build": build_label(system_info),
        "llama_lib_path": override or str(Path(llama_cpp.__file__).resolve().parent / "lib"),
        "llama_lib_path_from": "LLAMA_CPP_LIB_PATH" if override else "package",
        "llama_system_info": system_info,
        "loaded_libraries": sorted(mapped),
    }


def _busy_cpu_s() -> float:
    """CPU seconds all processors spent not idle since boot (/proc/stat: steal counts as busy)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(value) for value in Path("/proc/stat").read_text(encoding="utf-8").split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def spawn(spec: dict[str, Any], work: Path, name: str, timeout_s: float = CHILD_TIMEOUT_S) -> dict[str, Any]:
    """Run one configuration in a fresh interpreter; its output goes to a log, its numbers come back as JSON.

    Also measures how much CPU other processes took meanwhile: llama.cpp's threads wait for each
    other at every step, so a competitor on one core slows a run on all cores many times over.
    """
    spec = {**spec, "result": str(work / f"{name}.json")}
    spec_path = work / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    log_path = work / f"{name}.log"
    environ = dict(os.environ)
    if spec.get("lib_path"):
        # llama-cpp-python loads libllama from here instead of its package (libmtmd, if ever imported, too).
        environ.update(LLAMA_CPP_LIB_PATH=spec["lib_path"], MTMD_CPP_LIB=spec["lib_path"])
    print(f"  {name} ...", end="", flush=True)
    started, busy, own = time.perf_counter(), _busy_cpu_s(), _children_cpu_s()
    with log_path.open("w", encoding="utf-8") as log:
        status = subprocess.run(
            [sys.executable, "-m", "scripts.bench", "--child", str(spec_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environ,
            timeout=timeout_s,
            check=False,
        ).returncode
    wall = time.perf_counter() - started
    others = max(0.0, (_busy_cpu_s() - busy) - (_children_cpu_s() - own))
    if status != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"\nerror: configuration {name} failed (exit {status}); end of {log_path}:\n{tail}")
    result: dict[str, Any] = json.loads(Path(spec["result"]).read_text(encoding="utf-8"))
    result.update(run=name, wall_s=round(wall, 2), other_cpu_share=round(others / (wall * (os.cpu_count() or 1)), 3))
    print(f" {wall:.0f} s, other processes {result['other_cpu_share']:.0%} of the CPUs", flush=True)
    return result


def machine_info() -> dict[str, Any]:
    """CPU, cores, affinity, memory, llama.cpp's build features and library versions."""
    import llama_cpp

    def cpuinfo(key: str) -> str | None:
        try:
            for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        except OSError:
            return None
        return None

    def meminfo_gib() -> float | None:
        try:
            for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
        except OSError:
            return None
        return None

    return {
        "cpu_model": cpuinfo("model name"),
        "cpu_flags_avx512f": "avx512f" in cpu_flags(),
        "cpu_count": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "mem_total_gib": meminfo_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "llama_system_info": llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip(),
        "versions": {
            name: importlib.metadata.version(name) for name in ("llama_cpp_python", "numpy", "gguf", "pydantic")
        },
    }


def cpu_flags() -> set[str]:
    """The instruction-set flags /proc/cpuinfo lists for the first CPU (empty where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()
