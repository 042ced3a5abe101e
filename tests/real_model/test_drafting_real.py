"""Prompt-lookup drafting on the real instruct model: the same answers, parting only at near-ties."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handler.core.settings import settings_from
from handler.domain.requests import GenerationOptions, parse_request
from handler.engine import Engine, load_engine
from handler.formats.prompts import build_messages
from scripts.repository import ROOT
from tests.support.near_ties import parting

EVENTS = ROOT / "events"
MOBY_DICK = ROOT / "tests" / "data" / "moby-dick-chapters-1-9.txt"


@pytest.fixture(scope="module")
def engine(real_model: Path) -> Engine:
    return load_engine(settings_from({"MODEL_PATH": str(real_model), "N_THREADS": "2"}))


def test_drafted_answers_equal_one_token_at_a_time_except_from_a_near_tie(engine: Engine) -> None:
    """Checking a draft decodes several tokens in one batch: llama.cpp's kernels then sum in another order than
    for one token, so logits differ in their low bits, and where the two best are nearly equal the pick can tip.
    Measured on this model with drafts of 8: the seed's summary, translation and chat part after 27 to 44
    identical tokens, where the top two logits are 0.10 to 0.14 apart. A drafting bug (a wrong position, a
    rejected draft left in the cache, a draft kept that the model did not choose) parts at once or far from a
    tie."""
    requests = [json.loads((EVENTS / f"{name}.json").read_text()) for name in ("summarize", "translate", "chat-solve")]
    passage = MOBY_DICK.read_text(encoding="utf-8")[2000:5000]
    requests.append({"task": "summarize", "text": passage, "style": "bullets"})
    options = GenerationOptions(max_tokens=160)
    drafted = accepted = identical = 0
    for raw in requests:
        prompt = engine.build_prompt(build_messages(parse_request(raw)))
        engine.clear_cache()
        single = engine.generate(prompt, options, draft_max=0)
        engine.clear_cache()
        fast = engine.generate(prompt, options)  # the default SPEC_DRAFT_MAX
        drafted += fast.drafted_tokens
        accepted += fast.accepted_tokens
        assert fast.eval_runs < single.eval_runs  # fewer decode steps
        if fast.text == single.text:
            identical += 1
            continue
        part = parting(engine, prompt, single.text, fast.text)
        assert part.split >= 4, (raw["task"], single.text, fast.text)
        assert {part.best[0], part.runner_up[0]} == {part.ours, part.theirs}, raw["task"]
        assert part.gap < 0.5, raw["task"]
    assert accepted > 0
    assert drafted > accepted
    assert identical >= 1
