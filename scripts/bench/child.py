"""A child process's side of runner.spawn: one configuration measured, its result written beside its spec.

``python -m scripts.bench --child SPEC`` runs it; CHILDREN maps each configuration's name to its measurement.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from handler.engine import peak_rss_mb
from scripts.bench.configs import compared_config
from scripts.bench.drafting import child_acceptance, child_cost
from scripts.bench.measurements import (
    child_bandwidth,
    child_batched,
    child_document_chunks,
    child_document_tasks,
    child_engine,
    child_raw,
    child_seed,
    loadavg,
)
from scripts.bench.prefill_roofline import child_int8_peak
from scripts.bench.profile import child_profile
from scripts.bench.runner import loaded_build
from scripts.bench.side_by_side import child_side_by_side

CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "a": child_seed,
    "b": child_engine,
    "c": child_raw,
    "d": child_bandwidth,
    "e": child_batched,
    "p": child_int8_peak,
    "side-by-side": child_side_by_side,
    "profile": child_profile,
    # (b) and (c) with the comparison build: the same code, other libraries (LLAMA_CPP_LIB_PATH).
    compared_config("b"): child_engine,
    compared_config("c"): child_raw,
    "draft-acceptance": child_acceptance,
    "draft-cost": child_cost,
    "documents-tasks": child_document_tasks,
    "documents-chunks": child_document_chunks,
}


def run_child(spec_path: Path) -> int:
    """Child entry point: run one configuration and write its JSON next to the spec."""
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    result: dict[str, Any] = {"config": spec["config"], "input": spec.get("input"), "loadavg_start": loadavg()}
    result.update(CHILDREN[spec["config"]](spec))
    result.update(peak_rss_mb=peak_rss_mb(), loadavg_end=loadavg())
    if "llama_cpp" in sys.modules:  # not (d): no llama.cpp there
        result.update(loaded_build())
        expected = spec.get("expect_build")
        if expected and result["build"] != expected:
            raise RuntimeError(
                f"expected the {expected} build, loaded {result['build']} from {result['loaded_libraries']}: "
                f"{result['llama_system_info']}"
            )
        lib_dir = spec.get("lib_path")
        outside = [lib for lib in result["loaded_libraries"] if lib_dir and not lib.startswith(lib_dir + "/")]
        if outside:
            raise RuntimeError(f"libraries loaded from outside {lib_dir}: {outside}")
    Path(spec["result"]).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0
