"""Several requests decoded at once on the tiny phi3 model (handler/engine/batch_decoder.py): the same answers as
one at a time, unified and split KV caches, stop strings and deadlines per request, a shared text evaluated once.
"""

from __future__ import annotations

from pathlib import Path

from handler.core.settings import settings_from
from handler.domain.requests import GenerationOptions
from handler.engine import Engine, load_engine
from handler.formats.prompts import Message


def _batch_engine(tiny_model: Path, parallel: int) -> Engine:
    return load_engine(
        settings_from({"MODEL_PATH": str(tiny_model), "N_THREADS": "2", "BATCH_PARALLEL": str(parallel)})
    )


def test_generate_batch_matches_one_at_a_time_greedy_outputs(tiny_model: Path) -> None:
    # GIVEN more requests than sequences, with different lengths, limits and stops
    engine = _batch_engine(tiny_model, parallel=3)
    texts = ["Cats and dogs.", "A much longer text about gradient boosting and trees. " * 6, "Hi.", "Tell me.", "x"]
    jobs = [
        (engine.build_prompt([Message("user", text)]), GenerationOptions(max_tokens=10 + 7 * n, stop=[]))
        for n, text in enumerate(texts)
    ]

    # WHEN they are decoded together and one at a time
    together = engine.generate_batch(jobs)
    alone = [engine.generate(prompt, options) for prompt, options in jobs]

    # THEN every output is the same
    assert [c.text for c in together if c] == [c.text for c in alone]
    assert [c.completion_tokens for c in together if c] == [c.completion_tokens for c in alone]
    assert all(c is not None and c.prompt_ms > 0 and c.eval_tokens_per_s > 0 for c in together)


def test_requests_sharing_a_prefix_share_a_unified_cache_and_others_get_one_split_by_sequence(
    tiny_model: Path,
) -> None:
    engine = _batch_engine(tiny_model, parallel=4)
    text = "Gradient boosting builds trees one after another, each fitting the last one's errors. " * 12
    options = GenerationOptions(max_tokens=8, stop=[])
    over_one_text = [
        (engine.build_prompt([Message("user", text + f"\n\nTask {n}: summarize it.")]), options) for n in range(3)
    ]
    unrelated = [(engine.build_prompt([Message("user", f"Chunk {n}: " + text[n:])]), options) for n in range(3)]
    too_long_for_a_quarter = [
        (engine.build_prompt([Message("user", text * 10)]), GenerationOptions(max_tokens=8)),
        unrelated[0],
    ]

    assert engine.unified_for(over_one_text)
    assert not engine.unified_for(unrelated)
    assert not engine.unified_for(unrelated[:1])
    assert engine.unified_for(too_long_for_a_quarter)  # a split cache gives each sequence a quarter


def test_batches_in_a_split_cache_and_a_unified_one_answer_as_one_at_a_time(tiny_model: Path) -> None:
    # GIVEN unrelated requests (split cache) and requests over one text (unified cache)
    engine = _batch_engine(tiny_model, parallel=3)
    text = "Boosted trees add one weak learner at a time to reduce the loss of the ensemble. " * 10
    options = GenerationOptions(max_tokens=12, stop=[])
    unrelated = [(engine.build_prompt([Message("user", f"{n} " + text[n * 7 :])]), options) for n in range(4)]
    shared = [(engine.build_prompt([Message("user", text + f"\n\nQuestion {n}?")]), options) for n in range(4)]
    alone = [engine.generate(prompt, opts).text for prompt, opts in unrelated + shared]

    # WHEN batches alternate between the two kinds of cache
    first = engine.generate_batch(unrelated)
    assert engine.batch_decoder.unified is False
    second = engine.generate_batch(shared)
    assert engine.batch_decoder.unified is True
    third = engine.generate_batch(unrelated)

    # THEN every batch answers as one at a time, and the cache switched back and forth cleanly
    assert [c.text for c in first if c] == alone[:4]
    assert [c.text for c in second if c] == alone[4:]
    assert [c.text for c in third if c] == alone[:4]


def test_generate_batch_applies_each_requests_stop_string(tiny_model: Path) -> None:
    engine = _batch_engine(tiny_model, parallel=2)
    prompt = engine.build_prompt([Message("user", "Write anything.")])
    free = engine.generate(prompt, GenerationOptions(max_tokens=40, stop=[]))
    stop = free.text.split()[2]

    stopped, unstopped = engine.generate_batch(
        [(prompt, GenerationOptions(max_tokens=40, stop=[stop])), (prompt, GenerationOptions(max_tokens=40, stop=[]))]
    )

    assert stopped is not None
    assert unstopped is not None
    assert stopped.finish_reason == "stop"
    assert free.text.startswith(stopped.text)
    assert unstopped.text == free.text


def test_generate_batch_returns_none_for_work_past_the_deadline(tiny_model: Path) -> None:
    import time

    engine = _batch_engine(tiny_model, parallel=2)
    prompt = engine.build_prompt([Message("user", "Go.")])

    results = engine.generate_batch([(prompt, GenerationOptions(max_tokens=50))] * 3, deadline=time.monotonic())

    assert results == [None, None, None]


def test_requests_over_one_text_in_one_batch_evaluate_the_text_once(tiny_model: Path) -> None:
    # GIVEN four tasks over one long text, text first (as handler/formats/prompts.py builds them)
    from handler.domain.requests import parse_request
    from handler.formats.prompts import build_messages

    engine = _batch_engine(tiny_model, parallel=4)
    text = "Gradient boosting builds trees one after another, each fitting the last one's errors. " * 12
    requests = [
        {"task": "summarize", "text": text, "style": "bullets"},
        {"task": "summarize", "text": text, "style": "paragraph"},
        {"task": "translate", "text": text, "target_language": "French"},
        {"task": "translate", "text": text, "target_language": "German"},
    ]
    jobs = [
        (engine.build_prompt(build_messages(parse_request(r))), GenerationOptions(max_tokens=6, stop=[]))
        for r in requests
    ]
    text_tokens = len(engine.build_prompt([Message("user", text)]).tokens)
    context, _ = engine.batch_decoder.context()
    engine.model.lib.llama_perf_context_reset(context)

    # WHEN they are decoded together, and again with each sequence evaluating its whole prompt
    together = engine.generate_batch(jobs)
    perf = engine.model.lib.llama_perf_context(context)
    llama_evaluated = int(perf.n_p_eval) + int(perf.n_eval)
    unshared = engine.generate_batch(jobs, share_prefixes=False)

    # THEN the first evaluates its whole prompt and the others only what follows the text
    assert all(c is not None for c in together)
    evaluated = [c.prompt_eval_tokens for c in together if c is not None]
    assert evaluated[0] == len(jobs[0][0].tokens)
    assert all(n < len(prompt.tokens) - text_tokens + 8 for n, (prompt, _) in zip(evaluated[1:], jobs[1:], strict=True))
    # AND llama.cpp's own counters agree: every token it evaluated is one of those, or a decode step's
    decode_steps = sum(c.completion_tokens for c in together if c is not None)
    assert sum(evaluated) <= llama_evaluated <= sum(evaluated) + decode_steps
    assert llama_evaluated < 2 * text_tokens  # the text once, not four times (measured: 506 for a 401-token text)
    # AND sharing changes no output
    assert [c.text for c in together if c] == [c.text for c in unshared if c]
