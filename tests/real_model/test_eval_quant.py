"""The quality harness end to end on the real model: two variants written, scored on a short run and recorded.

A short run (1,024 tokens: two windows, 510 scored tokens; one seed event, its answer cut to 8 tokens) says the
harness works and measures the right way round: the 8-bit control is closer to the source than 4-bit Q4_0. The
full text is ``make eval-quant``'s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scripts.eval import quant


@pytest.fixture(scope="module")
def record(real_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("eval-quant")
    argv = ["--model", str(real_model), "--variants", "Q8_0,Q4_0", "--tokens", "1024"]
    argv += [
        "--events",
        "chat-solve.json",
        "--max-tokens",
        "8",
        "--out-dir",
        str(out),
        "--cache-dir",
        str(out / "variants"),
    ]

    assert quant.main(argv) == 0

    assert (out / "eval-quant.md").read_text(encoding="utf-8").count("\n| Q") >= 2
    loaded: dict[str, Any] = json.loads((out / "eval-quant.json").read_text(encoding="utf-8"))
    return loaded


def test_eval_quant_records_both_variants_against_the_source(record: dict[str, Any]) -> None:
    variants = {v["name"]: v for v in record["variants"]}

    assert set(variants) == {"Q8_0", "Q4_0"}
    assert record["text"]["windows"] == 2
    for variant in variants.values():
        assert variant["mean_kld"] >= 0
        assert variant["max_kld"] >= variant["p99_kld"] >= 0
        assert variant["tokens"] == 2 * 255
        assert [answer["event"] for answer in variant["seed_answers"]] == ["chat-solve.json"]


def test_the_8_bit_control_is_closer_to_the_source_than_q4_0(record: dict[str, Any]) -> None:
    variants = {v["name"]: v for v in record["variants"]}

    assert variants["Q8_0"]["mean_kld"] < variants["Q4_0"]["mean_kld"]
    assert variants["Q8_0"]["top1_agreement"] > 0.9
