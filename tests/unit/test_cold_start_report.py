"""The cold-start benchmark's reading of a container's log and its medians (bench/cold_start.py), without Docker."""

from __future__ import annotations

import json

from scripts.bench.cold_start import log_records, summarize

# The shape of a container's log: the emulator's lines and the handler's JSON records, as `docker logs` gives them.
EMULATOR_LOG = "\n".join(
    (
        "05 Dec 2026 08:55:34,958 [INFO] (rapid) exec '/var/runtime/bootstrap' (cwd=/var/task, handler=)",
        "START RequestId: 773e84e0 Version: $LATEST",
        "05 Dec 2026 08:55:37,960 [INFO] (rapid) INIT START(type: on-demand, phase: init)",
        json.dumps({"level": "INFO", "message": "settings read", "load_ms": 1.0}),
        json.dumps({"level": "INFO", "message": "model loaded", "load_ms": 1024.707, "llama_build": "avx512"}),
        "05 Dec 2026 08:55:39,699 [INFO] (rapid) INIT RTDONE(status: success)",
        "05 Dec 2026 08:55:39,699 [INFO] (rapid) INIT REPORT(durationMs: 1739.008000)",
        "{not json",
        "REPORT RequestId: 773e84e0\tInit Duration: 0.04 ms\tDuration: 9350.71 ms",
    )
)


def test_the_init_phase_and_the_model_load_are_read_from_the_log() -> None:
    found = log_records(EMULATOR_LOG)
    # The init phase is the emulator's INIT REPORT, not the REPORT line's "Init Duration" (the emulator's is 0.04).
    assert found == {"init_ms": 1739.008, "load_ms": 1024.707, "build": "avx512"}


def test_a_log_without_init_or_load_gives_nothing() -> None:
    assert log_records("START RequestId: x\nEND RequestId: x\n") == {}


def test_medians_are_per_case_and_cache_in_first_seen_order() -> None:
    runs = [
        {"kind": "service", "name": "read, lazy", "cache": "cold", "init_s": 0.5, "load_s": float("nan")},
        {"kind": "service", "name": "read, lazy", "cache": "warm", "init_s": 0.4, "load_s": 2.0},
        {"kind": "service", "name": "read, lazy", "cache": "cold", "init_s": 0.7, "load_s": 6.0},
        {"kind": "service", "name": "read, lazy", "cache": "cold", "init_s": 0.6, "load_s": 4.0},
    ]
    rows = summarize(runs, ("init_s", "load_s"))
    assert [(row["cache"], row["runs"]) for row in rows] == [("cold", 3), ("warm", 1)]
    # A missing figure (NaN) is left out of its median, not counted as one.
    assert rows[0]["init_s"] == 0.6
    assert rows[0]["load_s"] == 5.0
    assert rows[1]["load_s"] == 2.0
