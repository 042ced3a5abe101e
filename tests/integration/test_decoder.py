"""One request decoded on the tiny phi3 model (handler/engine/decoder.py): llama.cpp's timings, max_tokens, greedy
determinism, stop strings, the deadline, sampling, the KV prefix reused by the next request, and the text handed
on as it is generated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from handler.core.settings import settings_from
from handler.domain.requests import GenerationOptions
from handler.engine import Engine, load_engine
from handler.formats.prompts import Message


def test_generate_reports_llama_cpp_timings(engine: Engine) -> None:
    prompt = engine.build_prompt([Message("user", "Summarize the following sentences with bullet points:\n\nA text.")])

    completion = engine.generate(prompt, GenerationOptions(max_tokens=24, seed=1))

    assert completion.finish_reason in {"length", "stop"}
    assert 0 < completion.completion_tokens <= 24
    assert completion.prompt_tokens == len(prompt.tokens)
    assert completion.prompt_eval_tokens > 0
    assert completion.prompt_ms > 0
    assert completion.eval_ms > 0
    assert completion.prompt_tokens_per_s > 0
    assert completion.eval_tokens_per_s > 0
    assert completion.total_ms >= completion.prompt_ms + completion.eval_ms


def test_generate_stops_at_max_tokens(engine: Engine) -> None:
    prompt = engine.build_prompt([Message("user", "Go on forever.")])

    completion = engine.generate(prompt, GenerationOptions(max_tokens=5))

    assert completion.completion_tokens <= 5
    if completion.completion_tokens == 5:
        assert completion.finish_reason == "length"


def test_generate_is_deterministic_when_greedy(engine: Engine) -> None:
    first = engine.build_prompt([Message("user", "Translate the following text to French.\n\nHello.")])
    other = engine.build_prompt([Message("user", "Something else entirely.")])

    a = engine.generate(first, GenerationOptions(max_tokens=16))
    engine.generate(other, GenerationOptions(max_tokens=16))
    b = engine.generate(first, GenerationOptions(max_tokens=16))

    assert a.text == b.text


def test_generate_matches_llama_cpp_python_greedy_completion(engine: Engine) -> None:
    prompt = engine.build_prompt([Message("user", "Summarize the following sentences with bullet points:\n\nCats.")])

    ours = engine.generate(prompt, GenerationOptions(max_tokens=40, stop=[]))
    reference: Any = engine.model.llama.create_completion(prompt=list(prompt.tokens), max_tokens=40, temperature=0.0)
    engine.clear_cache()  # the reference call moved the KV cache behind the engine's back

    assert ours.text == reference["choices"][0]["text"].strip()
    assert ours.completion_tokens == reference["usage"]["completion_tokens"]


def test_generate_cuts_output_at_a_stop_string(engine: Engine) -> None:
    prompt = engine.build_prompt([Message("user", "Write anything.")])
    free = engine.generate(prompt, GenerationOptions(max_tokens=40, stop=[]))
    stop = free.text.split()[2]

    stopped = engine.generate(prompt, GenerationOptions(max_tokens=40, stop=[stop]))

    assert stopped.finish_reason == "stop"
    assert stop not in stopped.text
    assert free.text.startswith(stopped.text)


def test_generate_ends_at_the_deadline(engine: Engine) -> None:
    import time

    prompt = engine.build_prompt([Message("user", "Go on.")])

    completion = engine.generate(prompt, GenerationOptions(max_tokens=400), deadline=time.monotonic())

    assert completion.finish_reason == "deadline"
    assert completion.completion_tokens < 400


def test_generate_ignore_eos_always_reaches_max_tokens(engine: Engine) -> None:
    prompt = engine.build_prompt([Message("user", "Stop early if you can.")])

    completion = engine.generate(prompt, GenerationOptions(max_tokens=300, temperature=1.5, seed=3), ignore_eos=True)

    assert completion.completion_tokens == 300
    assert completion.finish_reason == "length"


def test_generate_with_repeat_penalty_and_sampling_runs_in_llama_cpp(engine: Engine) -> None:
    prompt = engine.build_prompt([Message("user", "Repeat after me: la la la.")])
    options = GenerationOptions(max_tokens=12, temperature=0.7, top_p=0.9, repeat_penalty=1.3, seed=5)

    first, again = engine.generate(prompt, options), engine.generate(prompt, options)

    assert first.completion_tokens > 0
    assert first.text == again.text  # same seed, same output


# -- prompt cache ---------------------------------------------------------------------------------


def test_next_request_reuses_the_shared_instruction_and_answers_as_from_an_empty_cache(engine: Engine) -> None:
    # GIVEN two prompts with the same instruction before different texts
    instruction = "Summarize the following sentences with bullet points:\n\n"
    first = engine.build_prompt([Message("user", instruction + "Cats sleep most of the day.")])
    second = engine.build_prompt([Message("user", instruction + "Dogs bark at the mail carrier.")])
    shared = next(i for i, (a, b) in enumerate(zip(first.tokens, second.tokens, strict=False)) if a != b)
    options = GenerationOptions(max_tokens=12, stop=[])

    # WHEN the second follows the first, and again after the cache is cleared
    engine.clear_cache()
    engine.generate(first, options)
    warm = engine.generate(second, options)
    engine.clear_cache()
    cold = engine.generate(second, options)

    # THEN the warm request evaluates only what follows the shared prefix, and answers the same
    assert shared > 5
    assert warm.prompt_eval_tokens == len(second.tokens) - shared
    assert cold.prompt_eval_tokens == len(second.tokens)
    assert (warm.text, warm.completion_tokens) == (cold.text, cold.completion_tokens)


def test_the_engine_hands_on_its_text_as_it_generates(tiny_model: Path) -> None:
    # GIVEN the tiny model generating 24 tokens
    engine: Engine = load_engine(settings_from({"MODEL_PATH": str(tiny_model), "N_THREADS": "2"}))
    prompt = engine.build_prompt([Message("user", "Tell me about trees.")])
    options = GenerationOptions(max_tokens=24)
    pieces: list[str] = []
    # WHEN it generates with a sink
    streamed = engine.generate(prompt, options, ignore_eos=True, sink=pieces.append)
    again = engine.generate(prompt, options, ignore_eos=True)
    # THEN the pieces, several, joined are the completion's text, the same as without a sink (greedy)
    assert len(pieces) > 1
    assert "".join(pieces) == streamed.text == again.text
