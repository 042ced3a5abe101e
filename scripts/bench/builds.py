"""The comparison build (AVX-512): prepared once, and its speeds over the shipped build's."""

from __future__ import annotations

import platform
import statistics
import sys
import time
from typing import Any

from scripts.bench.configs import (
    COMPARE_BUILD,
    COMPARE_FLAGS,
    COMPARE_LIB_DIR,
    COMPARED,
    CPU_FLAGS_OF_OPTION,
    DISPATCH_GAIN,
    compared_config,
)
from scripts.bench.report import paired_ratios
from scripts.bench.runner import cpu_flags
from scripts.repository import ROOT


def prepare_compare_build(enabled: bool) -> dict[str, Any]:
    """The AVX-512 build's libraries, unpacked into COMPARE_LIB_DIR, or why the comparison is skipped.

    scripts/builds/llama.py compiles the build once (about 10 minutes on 2 cores) and keeps its wheel
    under a key of its flags; later runs only check the key of the unpacked libraries.
    """
    from scripts.builds import llama

    info: dict[str, Any] = {"build": COMPARE_BUILD, "flags_file": str(COMPARE_FLAGS.relative_to(ROOT))}
    machine = platform.machine().lower()
    if not enabled:
        return {**info, "skipped": "--no-compare-builds"}
    if llama.ARCHITECTURES.get(machine) != "amd64":
        return {**info, "skipped": f"this machine is {machine}, not x86_64: no AVX-512 build to compare"}
    options = llama.cmake_flag_values(llama.read_flags(COMPARE_FLAGS))
    needed = [flag for option, flags in CPU_FLAGS_OF_OPTION.items() if options.get(option) == "ON" for flag in flags]
    missing = [flag for flag in needed if flag not in cpu_flags()]
    if missing:
        return {**info, "skipped": f"this CPU lacks {', '.join(missing)}, which the AVX-512 build uses"}
    print(
        f"preparing the {COMPARE_BUILD} build's libraries in {COMPARE_LIB_DIR.relative_to(ROOT)} "
        f"(the first time compiles llama.cpp with {COMPARE_FLAGS.name}: about 10 minutes on 2 cores) ...",
        flush=True,
    )
    started = time.perf_counter()
    try:
        lib_dir = llama.unpack_libraries(sys.executable, COMPARE_FLAGS, llama.DEFAULT_CACHE, COMPARE_LIB_DIR)
    except (llama.BuildError, OSError) as exc:
        return {**info, "skipped": f"the {COMPARE_BUILD} build could not be prepared: {exc}"}
    key = (lib_dir / llama.MARKER_NAME).read_text(encoding="utf-8").split()[0]
    return {**info, "lib_dir": str(lib_dir.resolve()), "key": key, "prepare_s": round(time.perf_counter() - started, 1)}


def compare_builds(runs: list[dict[str, Any]], inputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Paired ratios of the comparison build over the shipped one, and the dispatch decision.

    Each ratio is taken within a repetition, (b') over (b) and (c') over (c), as paired_ratio does;
    the decision takes the median of all of them, both configurations and every input pooled.
    """
    ratios: dict[str, dict[str, float | None]] = {}
    pooled: dict[str, list[float]] = {"prompt": [], "decode": []}
    for name in inputs:
        ratios[name] = {}
        for config in COMPARED:
            for speed, key in (("prompt", "prompt_tokens_per_s"), ("decode", "decode_tokens_per_s")):
                values = paired_ratios(runs, name, compared_config(config), config, key)
                pooled[speed] += values
                label = f"{config}'/{config} {speed}"
                ratios[name][label] = round(statistics.median(values), 3) if values else None
    prompt, decode = (round(statistics.median(pooled[k]), 3) if pooled[k] else None for k in ("prompt", "decode"))
    if prompt is None or decode is None:
        return {"ratios": ratios, "dispatch": None, "dispatch_text": "dispatch: no paired runs of both builds"}
    worth = max(prompt, decode) >= DISPATCH_GAIN
    if worth:
        text = f"dispatch: AVX-512 build worth shipping beside AVX2 (prompt {prompt:.2f}, decode {decode:.2f})"
    else:
        text = f"dispatch: one AVX2 build (AVX-512 gains prompt {prompt:.2f}, decode {decode:.2f} < {DISPATCH_GAIN})"
    return {
        "ratios": ratios,
        "pooled_ratios": {speed: [round(value, 3) for value in values] for speed, values in pooled.items()},
        "dispatch": {
            "prompt_ratio": prompt,
            "decode_ratio": decode,
            "threshold": DISPATCH_GAIN,
            "decision": "ship the AVX-512 build beside AVX2" if worth else "one AVX2 build",
        },
        "dispatch_text": text,
    }


def builds_of(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each build the children ran: its full system info, library folder and mapped files, and its configurations."""
    builds: dict[str, dict[str, Any]] = {}
    for run in runs:
        if "build" not in run:
            continue
        entry = builds.setdefault(
            run["build"],
            {
                "llama_system_info": run["llama_system_info"],
                "llama_lib_path": run["llama_lib_path"],
                "llama_lib_path_from": run["llama_lib_path_from"],
                "loaded_libraries": run["loaded_libraries"],
                "configs": [],
            },
        )
        if run["config"] not in entry["configs"]:
            entry["configs"].append(run["config"])
    return builds
