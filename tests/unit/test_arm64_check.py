"""The arm64 check's own logic (scripts/docker/arm64_check.py): what it reads from llama.cpp and how it compares."""

from __future__ import annotations

import json
from typing import Any

import pytest

from scripts.docker import arm64_check
from scripts.docker.arm64_greedy import RESULT_MARK

GRAVITON2_INFO = "CPU : NEON = 1 | ARM_FMA = 1 | FP16_VA = 1 | DOTPROD = 1 | OPENMP = 0 | REPACK = 1 | "


def _greedy(*texts: str) -> dict[str, Any]:
    return {
        "results": [
            {
                "prompt": f"p{index}",
                "ignore_eos": False,
                "text": text,
                "pieces": list(text),
                "completion_tokens": len(text),
                "finish_reason": "length",
            }
            for index, text in enumerate(texts)
        ]
    }


def test_features_are_the_instruction_sets_compiled_in() -> None:
    features = arm64_check.features_of(GRAVITON2_INFO)

    assert {"NEON", "DOTPROD", "FP16_VA"} <= features
    assert "OPENMP" not in features  # "= 0" is not compiled in


def test_equal_generations_compare_equal_and_a_different_piece_is_named() -> None:
    assert arm64_check.compare_greedy(_greedy("abc", "de"), _greedy("abc", "de")) == []

    problems = arm64_check.compare_greedy(_greedy("abc", "de"), _greedy("abc", "df"))

    assert problems
    assert all("'p1'" in problem for problem in problems)
    assert any(problem.startswith("'p1' (ignore_eos=False): text differs") for problem in problems)


def test_result_line_is_found_among_log_lines() -> None:
    payload = {"results": [], "machine": "aarch64"}
    output = '{"level":"INFO","message":"model loaded"}\n' + RESULT_MARK + json.dumps(payload) + "\n"

    assert arm64_check.result_of(output) == payload
    with pytest.raises(arm64_check.CheckError, match="no result line"):
        arm64_check.result_of('{"level":"INFO"}\n')
