"""One model load through llama.cpp's own API, timed in parts: run inside the function image by cold_start.py.

    python load_probe.py --model /opt/bench-model/model.gguf --mode direct

It loads the build the handler would choose (handler/engine/builds.py), then the model with the named
``llama_load_mode`` (read: plain reads into llama.cpp's buffers; mmap: the file mapped; direct: direct I/O
where the file system allows it), creates the service's context and decodes one token, and prints one line
of JSON: each part's seconds, the process's resident memory after the load and at its peak, and what
llama.cpp logged about the load mode. Standard library, the handler and llama_cpp only: it runs in the image.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

#: llama.cpp's ``enum llama_load_mode`` values (include/llama.h of the pinned version).
LOAD_MODES = {"read": 0, "mmap": 1, "direct": 4}
RESULT_MARK = "load-probe-result: "
N_CTX = 4096
#: llama.cpp log lines worth keeping: how the file was read.
LOG_WORDS = ("buffer size", "mmap", "direct", "O_DIRECT", "fall")


def rss_mb() -> float:
    """This process's resident memory now, in MB (VmRSS)."""
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def probe(model: Path, mode: str, threads: int) -> dict[str, Any]:
    started = time.perf_counter()
    from handler.engine import builds

    build = builds.select_build(Path(os.environ.get("LLAMA_CPP_BUILDS_DIR", "/opt/llama-cpp")))
    import llama_cpp

    imported = time.perf_counter()
    kept: list[str] = []

    def on_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        line = text.decode("utf-8", errors="replace").strip()
        if any(word in line for word in LOG_WORDS) and "assigned to device" not in line:
            kept.append(line[:200])

    # Kept in a local for the whole load: ctypes frees a callback whose Python object is gone.
    log_callback = llama_cpp.llama_log_callback(on_log)
    llama_cpp.llama_log_set(log_callback, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.load_mode = LOAD_MODES[mode]
    before_load = time.perf_counter()
    loaded = llama_cpp.llama_model_load_from_file(str(model).encode(), params)
    if not loaded:
        raise SystemExit(f"llama.cpp could not load {model} with load mode {mode}")
    after_load = time.perf_counter()
    rss_after_load = rss_mb()
    context_params = llama_cpp.llama_context_default_params()
    context_params.n_ctx = N_CTX
    context_params.n_threads = threads
    context_params.n_threads_batch = threads
    # The engine's K cache type (KV_CACHE_TYPE_K's default), so the context costs what the service's does.
    context_params.type_k = llama_cpp.GGML_TYPE_Q8_0
    context = llama_cpp.llama_init_from_model(loaded, context_params)
    after_context = time.perf_counter()
    token = (llama_cpp.llama_token * 1)(llama_cpp.llama_vocab_bos(llama_cpp.llama_model_get_vocab(loaded)))
    if llama_cpp.llama_decode(context, llama_cpp.llama_batch_get_one(token, 1)) != 0:
        raise SystemExit("llama_decode failed")
    after_decode = time.perf_counter()
    return {
        "mode": mode,
        "load_mode_name": llama_cpp.llama_load_mode_name(LOAD_MODES[mode]).decode(),
        "build": build.build,
        "import_s": round(imported - started, 3),
        "load_s": round(after_load - before_load, 3),
        "context_s": round(after_context - after_load, 3),
        "first_decode_s": round(after_decode - after_context, 3),
        "total_s": round(after_decode - started, 3),
        "rss_after_load_mb": rss_after_load,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "llama_log": kept[-12:],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--mode", choices=sorted(LOAD_MODES), required=True)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    result = probe(args.model, args.mode, args.threads)
    print(RESULT_MARK + json.dumps(result), flush=True)
    # Skip the interpreter's teardown: the bindings' finalizers are not needed for a measurement that is done.
    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
