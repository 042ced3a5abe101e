"""Prompt-lookup drafting in the engine (tiny model): the same tokens as one at a time, the cache left right."""

from __future__ import annotations

from pathlib import Path

import pytest

from handler.core.settings import settings_from
from handler.domain.requests import GenerationOptions
from handler.engine import Engine, load_engine
from handler.formats.prompts import Message

# Texts the tiny model's random weights turn into output that repeats itself and its prompt: what drafts find.
TEXTS = [
    "Summarize: the cat sat on the mat. The cat sat on the mat. The cat sat on the mat.",
    "A much longer text about gradient boosting and trees. " * 6,
    "Translate: one two three four five six seven eight nine ten, one two three four five.",
    "x",
]


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Engine:
    return load_engine(settings_from({"MODEL_PATH": str(tiny_model), "N_THREADS": "2"}))  # the default SPEC_DRAFT_MAX


def _cells(engine: Engine) -> int:
    lib = engine.model.lib
    return int(lib.llama_memory_seq_pos_max(lib.llama_get_memory(engine.model.ctx), 0)) + 1


@pytest.mark.parametrize("draft_max", [None, 1, 4, 8, 16])
def test_drafting_gives_exactly_the_tokens_of_decoding_one_at_a_time(engine: Engine, draft_max: int | None) -> None:
    """None: the engine's default (SPEC_DRAFT_MAX unset), against SPEC_DRAFT_MAX=0's one token per step."""
    most = draft_max if draft_max is not None else engine.decoder.spec_draft_max
    assert most > 0
    options = GenerationOptions(max_tokens=160, stop=[])
    drafted = accepted = 0
    for text in TEXTS:
        prompt = engine.build_prompt([Message("user", text)])
        engine.clear_cache()
        plain = engine.generate(prompt, options, ignore_eos=True, draft_max=0)
        engine.clear_cache()
        fast = engine.generate(prompt, options, ignore_eos=True, draft_max=draft_max)

        assert fast.text == plain.text
        assert fast.completion_tokens == plain.completion_tokens == 160
        assert plain.drafted_tokens == plain.accepted_tokens == 0
        assert plain.eval_runs == 159  # the last token is sampled, never decoded
        # every step yields its own token and the drafted ones kept; the first came from the prompt
        assert fast.eval_runs + fast.accepted_tokens == 159
        assert all(0 < k <= most and 0 <= kept <= k for k, kept in fast.draft_steps)
        assert sum(k for k, _ in fast.draft_steps) == fast.drafted_tokens
        assert sum(kept for _, kept in fast.draft_steps) == fast.accepted_tokens
        assert fast.eval_tokens_per_s > 0
        assert fast.eval_steps_per_s > 0
        drafted += fast.drafted_tokens
        accepted += fast.accepted_tokens
    # the test means something only if drafts were made, and some kept
    assert drafted > 0
    assert accepted > 0
    assert accepted < drafted or most == 1


def test_the_kv_cache_holds_exactly_the_kept_tokens_after_drafting(engine: Engine) -> None:
    prompt = engine.build_prompt([Message("user", TEXTS[0])])
    engine.clear_cache()

    completion = engine.generate(prompt, GenerationOptions(max_tokens=120, stop=[]), ignore_eos=True)

    assert completion.drafted_tokens > completion.accepted_tokens > 0  # some drafts were rejected
    # the prompt and every decoded token, no rejected draft: cells and the engine's own record agree
    assert len(engine.decoder.kv_tokens) == len(prompt.tokens) + completion.completion_tokens - 1
    assert _cells(engine) == len(engine.decoder.kv_tokens)


def test_a_request_after_a_drafted_one_reuses_its_cells_and_answers_as_from_an_empty_cache(engine: Engine) -> None:
    options = GenerationOptions(max_tokens=64, stop=[])
    first = engine.build_prompt([Message("system", "Be brief."), Message("user", TEXTS[2])])
    second = engine.build_prompt([Message("system", "Be brief."), Message("user", TEXTS[0])])

    engine.clear_cache()
    engine.generate(first, options, ignore_eos=True)
    reused = engine.generate(second, options, ignore_eos=True)
    engine.clear_cache()
    fresh = engine.generate(second, options, ignore_eos=True, draft_max=0)

    assert reused.prompt_eval_tokens < reused.prompt_tokens
    assert reused.drafted_tokens > 0
    assert reused.text == fresh.text


def test_stop_strings_and_the_stream_are_the_same_with_drafting(engine: Engine) -> None:
    prompt = engine.build_prompt([Message("user", TEXTS[1])])
    free = engine.generate(prompt, GenerationOptions(max_tokens=120, stop=[]), ignore_eos=True, draft_max=0)
    stop = free.text.split()[-3]
    options = GenerationOptions(max_tokens=120, stop=[stop])

    plain = engine.generate(prompt, options, ignore_eos=True, draft_max=0)
    pieces: list[str] = []
    fast = engine.generate(prompt, options, ignore_eos=True, draft_max=8, sink=pieces.append)

    assert fast.finish_reason == plain.finish_reason == "stop"
    assert fast.text == plain.text
    assert "".join(pieces) == fast.text


def test_sampled_requests_do_not_draft(engine: Engine) -> None:
    prompt = engine.build_prompt([Message("user", TEXTS[0])])
    options = GenerationOptions(max_tokens=80, temperature=0.8, seed=5, stop=[])

    first = engine.generate(prompt, options, ignore_eos=True, draft_max=8)
    second = engine.generate(prompt, options, ignore_eos=True, draft_max=0)

    assert first.drafted_tokens == 0
    assert first.text == second.text  # the same seed samples the same tokens: drafting changed nothing


def test_a_setting_of_zero_turns_drafting_off(tiny_model: Path) -> None:
    engine = load_engine(settings_from({"MODEL_PATH": str(tiny_model), "N_THREADS": "2", "SPEC_DRAFT_MAX": "0"}))
    prompt = engine.build_prompt([Message("user", TEXTS[0])])

    completion = engine.generate(prompt, GenerationOptions(max_tokens=80, stop=[]), ignore_eos=True)

    assert completion.drafted_tokens == 0
    assert completion.draft_steps == ()
    assert completion.eval_runs == 79
