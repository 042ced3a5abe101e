"""Cold start of the function image with the Phi-3-shaped bench model baked in, measured in one run.

    python -m scripts.bench.cold_start [--repeats 2] [--image IMAGE]        (make bench-cold-start)

The image is the one ``make sam-build`` made (GenerateFunction's), with the 2.4 GB Q4_K_M bench model added as a
layer of its own (``COLD_START_IMAGE``) and ``MODEL_PATH`` pointing at it. Each run starts a fresh container, the
host's page cache either dropped first (cold: the model's bytes come from the disk) or holding the model (warm).

- **service**: ``docker run`` of the image's own entry point (its Runtime Interface Emulator), one chat request
  (16 tokens) as soon as the emulator listens; from its log and answer: the init phase (the emulator's INIT
  REPORT), the model load (read or mapped: ``USE_MMAP``) with the engine's warm-up, and the first answer, for
  ``PRELOAD_MODEL`` on (the load is in init) and off (in the first request).
- **load**: load_probe.py in the image: llama.cpp's own load of the model with each ``llama_load_mode`` the
  pinned version has (read, mmap, direct I/O), the context and one decoded token, each part timed, with the
  resident memory.

The page cache is dropped through /proc/sys/vm/drop_caches (root only; without it the cold runs are skipped and
the report says so). The local disk stands in for Lambda's image store, which reads an image lazily in chunks
over the network on a new worker: the cold figures are this machine's disk, not Lambda's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from scripts.bench.model import ensure_model
from scripts.bench.report import cell, print_aligned
from scripts.bench.runner import machine_info
from scripts.repository import BENCH_MODEL

COLD_START_IMAGE = "llm-service/cold-start:bench"
MODEL_DIR = "/opt/bench-model"
PROBE_DIR = "/opt/load-probe"
#: Lambda's cap on a function's init phase, in seconds.
INIT_LIMIT_S = 10.0
FIRST_REQUEST = {
    "task": "chat",
    "messages": [{"role": "user", "content": "Say hello."}],
    "options": {"max_tokens": 16, "store": False},
}
#: (name, environment) of the service runs.
SERVICE_RUNS: tuple[tuple[str, dict[str, str]], ...] = (
    ("read, preload", {"USE_MMAP": "false", "PRELOAD_MODEL": "true"}),
    ("read, lazy", {"USE_MMAP": "false", "PRELOAD_MODEL": "false"}),
    ("mmap, preload", {"USE_MMAP": "true", "PRELOAD_MODEL": "true"}),
    ("mmap, lazy", {"USE_MMAP": "true", "PRELOAD_MODEL": "false"}),
)
LOAD_MODES = ("read", "mmap", "direct")
CACHES = ("cold", "warm")
ANSWER_TIMEOUT_S = 600
DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def docker(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, **kwargs)


def build_image(base: str, model: Path) -> str:
    """The function image plus the bench model (model.gguf and its sha256 sidecar); rebuilt when either changes."""
    from scripts.sam.build import image_label

    base_id = docker("image", "inspect", "--format", "{{.Id}}", base).stdout.strip()
    sha256 = Path(f"{model}.sha256").read_text(encoding="utf-8").split()[0]
    key = f"{base_id} {sha256}"
    if image_label(COLD_START_IMAGE, "llm-service.cold-start.key") == key:
        return COLD_START_IMAGE
    dockerfile = "\n".join(
        (
            f"FROM {base}",
            f'LABEL llm-service.cold-start.key="{key}"',
            f"COPY --link {model.name} {MODEL_DIR}/model.gguf",
            f"COPY --link model.gguf.sha256 {MODEL_DIR}/model.gguf.sha256",
            f"ENV MODEL_PATH={MODEL_DIR}/model.gguf",
        )
    )
    with tempfile.TemporaryDirectory() as context:
        # The build context holds just the two files: hard links where the file system allows, copies elsewhere.
        target = Path(context) / model.name
        try:
            os.link(model, target)
        except OSError:
            shutil.copyfile(model, target)
        (Path(context) / "model.gguf.sha256").write_text(f"{sha256}  model.gguf\n", encoding="utf-8")
        (Path(context) / "Dockerfile").write_text(dockerfile + "\n", encoding="utf-8")
        print(f"building {COLD_START_IMAGE} from {base} with {model.name} ...", flush=True)
        subprocess.run(["docker", "buildx", "build", "--load", "--tag", COLD_START_IMAGE, context], check=True)
    return COLD_START_IMAGE


def set_cache(state: str, image: str) -> None:
    """Cold: write back and drop the page cache. Warm: read the model once through a container."""
    if state == "cold":
        os.sync()
        DROP_CACHES.write_text("3\n", encoding="utf-8")
    else:
        docker("run", "--rm", "--entrypoint", "/bin/sh", image, "-c", f"cat {MODEL_DIR}/model.gguf > /dev/null")


def log_records(log: str) -> dict[str, Any]:
    """What the emulator and the handler logged: init's duration, and the model load with the build it ran."""
    found: dict[str, Any] = {}
    init = re.search(r"INIT REPORT\(durationMs: ([0-9.]+)", log)
    if init:
        found["init_ms"] = float(init.group(1))
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("message") == "model loaded":
            found["load_ms"] = record.get("load_ms")
            found["build"] = record.get("llama_build")
    return found


def service_run(image: str, env: dict[str, str]) -> dict[str, Any]:
    """One container from ``docker run`` to its first answer; the times are seconds from ``docker run``."""
    from scripts.sam.api import entry_point

    started = time.monotonic()
    with entry_point(image, env, prefix="llm-service-cold-start") as container:
        answered = container.invoke(json.dumps(FIRST_REQUEST), ANSWER_TIMEOUT_S, 0.05, ANSWER_TIMEOUT_S)
        answered_at = time.monotonic()
        log = container.logs()
    answer_s = answered_at - started
    # The request that got through was sent when the emulator first listened.
    sent = answered_at - answered.seconds
    body = answered.body
    if body.get("status") != "DONE":
        raise RuntimeError(f"{container.name}: the first request was not answered DONE: {json.dumps(body)[:400]}")
    metrics = body["metrics"]
    found = log_records(log)
    init_s = found.get("init_ms", float("nan")) / 1000
    return {
        # The emulator runs init when the first invoke arrives (Lambda, when the environment starts): the
        # container's own start is docker run up to the invoke that got through.
        "container_s": round(sent - started, 3),
        "init_end_s": round(sent - started + init_s, 3),
        "first_answer_s": round(answer_s, 3),
        "init_s": round(init_s, 3),
        "load_s": round((found.get("load_ms") or float("nan")) / 1000, 3),
        "request_s": round(metrics["total_ms"] / 1000, 3),
        "prompt_s": round(metrics["prompt_ms"] / 1000, 3),
        "eval_s": round(metrics["eval_ms"] / 1000, 3),
        "completion_tokens": metrics["completion_tokens"],
        "peak_rss_mb": metrics.get("peak_rss_mb"),
        "build": found.get("build"),
    }


def load_run(image: str, mode: str) -> dict[str, Any]:
    """load_probe.py in a fresh container of the image, with the given llama.cpp load mode."""
    probe = Path(__file__).with_name("load_probe.py")
    out = docker(
        "run",
        "--rm",
        "--volume",
        f"{probe}:{PROBE_DIR}/load_probe.py:ro",
        "--env",
        "PYTHONPATH=/var/task",
        "--entrypoint",
        "python",
        image,
        f"{PROBE_DIR}/load_probe.py",
        "--model",
        f"{MODEL_DIR}/model.gguf",
        "--mode",
        mode,
        timeout=ANSWER_TIMEOUT_S,
    )
    for line in out.stdout.splitlines():
        if line.startswith("load-probe-result: "):
            return dict(json.loads(line.removeprefix("load-probe-result: ")))
    raise RuntimeError(f"load_probe.py printed no result: {out.stdout[-400:]} {out.stderr[-400:]}")


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [run[key] for run in runs if isinstance(run.get(key), (int, float)) and run[key] == run[key]]
    return round(statistics.median(values), 3) if values else None


def summarize(runs: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Medians per (kind, name, cache), in the order the runs first appeared."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["kind"], run["name"], run["cache"]), []).append(run)
    return [
        {"kind": kind, "name": name, "cache": cache, "runs": len(group), **{key: median_of(group, key) for key in keys}}
        for (kind, name, cache), group in groups.items()
    ]


SERVICE_KEYS = (
    "container_s",
    "init_s",
    "init_end_s",
    "load_s",
    "prompt_s",
    "eval_s",
    "request_s",
    "first_answer_s",
    "peak_rss_mb",
)
LOAD_KEYS = ("import_s", "load_s", "context_s", "first_decode_s", "total_s", "rss_after_load_mb", "peak_rss_mb")


def print_report(report: dict[str, Any]) -> None:
    print("\nservice: docker run -> first answer (seconds; medians)")
    rows = [row for row in report["summary"] if row["kind"] == "service"]
    print_aligned(
        ["run", "cache", "n", *SERVICE_KEYS],
        [[row["name"], row["cache"], str(row["runs"]), *(cell(row[key]) for key in SERVICE_KEYS)] for row in rows],
        2,
    )
    print("\nllama.cpp load modes in the image (seconds; medians)")
    rows = [row for row in report["summary"] if row["kind"] == "load"]
    print_aligned(
        ["mode", "cache", "n", *LOAD_KEYS],
        [[row["name"], row["cache"], str(row["runs"]), *(cell(row[key]) for key in LOAD_KEYS)] for row in rows],
        2,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.cold_start", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs of each case and cache state (default 2)")
    parser.add_argument("--image", help="the function image; default: GenerateFunction's from `make sam-build`")
    parser.add_argument("--model", type=Path, default=BENCH_MODEL)
    parser.add_argument("--out-dir", type=Path, default=Path("bench-results"))
    args = parser.parse_args(argv)

    from scripts.sam.build import built_images

    base = args.image or built_images()["GenerateFunction"]
    model = ensure_model(args.model)
    image = build_image(base, args.model.resolve())
    caches = CACHES if os.geteuid() == 0 and DROP_CACHES.exists() else ("warm",)
    if caches == ("warm",):
        print("not root: the page cache cannot be dropped, so only warm runs are measured", flush=True)
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    cases = [("service", name, env) for name, env in SERVICE_RUNS] + [("load", mode, {}) for mode in LOAD_MODES]
    for repeat in range(args.repeats):
        # Rotating order, so no case always runs first or after the same one.
        shift = repeat % len(cases)
        for kind, name, env in cases[shift:] + cases[:shift]:
            for cache in caches:
                set_cache(cache, image)
                print(f"[{repeat + 1}/{args.repeats}] {kind} {name}, {cache} cache ...", end="", flush=True)
                result = service_run(image, env) if kind == "service" else load_run(image, name)
                runs.append({"kind": kind, "name": name, "cache": cache, "repeat": repeat, **result})
                print(f" {result.get('first_answer_s', result.get('total_s'))} s", flush=True)
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "base_image": base,
        "image": image,
        "model": model,
        "init_limit_s": INIT_LIMIT_S,
        "first_request": FIRST_REQUEST,
        "caches": list(caches),
        "summary": summarize([run for run in runs if run["kind"] == "service"], SERVICE_KEYS)
        + summarize([run for run in runs if run["kind"] == "load"], LOAD_KEYS),
        "runs": runs,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print_report(report)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / "cold-start.json"
    out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(f"wrote {out}; wall time {report['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
