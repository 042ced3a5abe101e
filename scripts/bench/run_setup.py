"""What the decode run, --sweep and --drafting prepare before their timed part, and hand to their children.

The model's layout is printed, its file read into the page cache, the inputs built with exact token counts, and
the engine's K cache type resolved for this model as the service would: every child gets it in its spec.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handler.core.settings import available_cpus, settings_from
from handler.engine import kv_cache_type_k
from scripts.bench.model import build_inputs, model_layout, read_into_page_cache


@dataclass(frozen=True)
class RunSetup:
    """One run's settings, model and inputs; ``started`` is when its timed part began (time.perf_counter)."""

    model: dict[str, Any]  # ensure_model's record: path, size, sha256
    layout: dict[str, Any]  # model_layout's: tensor types and bytes
    inputs: dict[str, dict[str, Any]]  # by name: prompt, text, tokens
    base: dict[str, Any]  # the fields of every child's spec
    max_tokens: int
    repeats: int
    threads: int  # the threads of (b), (c), (e): the option, else the CPUs this process may use
    type_k: str
    out_dir: Path
    work: Path
    started: float


def set_up(args: argparse.Namespace, model: dict[str, Any], out_dir: Path, work: Path) -> RunSetup:
    """Start the clock, print the model's layout, read it into the page cache and build the inputs."""
    max_tokens = args.max_tokens or (32 if args.sweep else 64 if args.quick else 170)
    started = time.perf_counter()
    layout = model_layout(args.model)
    print(
        f"model: {layout['file_type']}, {layout['tensor_bytes'] / 1e9:.2f} GB of tensors: "
        + ", ".join(f"{count} {name}" for name, count in sorted(layout["tensors_by_type"].items()))
    )
    read_into_page_cache(args.model)

    # Drafting's cost is measured after a summary's context: the 2,000-token input has enough tokens.
    inputs = build_inputs(args.model, (args.quick or args.sweep) and not args.drafting)
    # The engine's K cache type (KV_CACHE_TYPE_K, as the service reads it), resolved for this model:
    # (b) uses it, and (c), (d) and (e) take it too, so they measure the same work without Python.
    engine_settings = settings_from({**os.environ, "MODEL_PATH": str(args.model)})
    type_k = kv_cache_type_k(args.model, engine_settings.kv_cache_type_k)
    base = {
        "model": str(args.model),
        "max_tokens": max_tokens,
        "threads": args.threads,
        "type_k": type_k,
        "use_mmap": engine_settings.use_mmap,
    }
    return RunSetup(
        model=model,
        layout=layout,
        inputs=inputs,
        base=base,
        max_tokens=max_tokens,
        repeats=args.repeats or 3,
        threads=args.threads or available_cpus(),
        type_k=type_k,
        out_dir=out_dir,
        work=work,
        started=started,
    )


def write_report(setup: RunSetup, name: str, report: dict[str, Any]) -> Path:
    """``report`` with its wall time, as bench-results/``name``; returns the path."""
    report["wall_s"] = round(time.perf_counter() - setup.started, 1)
    path = setup.out_dir / name
    path.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return path
