"""The K cache's type on the tiny phi3 models (handler/engine/gguf.py): q8_0 by default with attention close to
f16's, f16 where the heads are not whole blocks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from handler.core.settings import settings_from
from handler.engine import Engine, load_engine
from handler.formats.prompts import Message
from scripts.models import random_model as make_test_model

# -- K cache type -----------------------------------------------------------------------------------

LONG_TEXT = "Gradient boosting builds trees one after another, each fitting what the others missed. " * 12


def _last_logits(engine: Engine, text: str) -> np.ndarray:
    """The logits after a prompt of the text, read straight from llama.cpp."""
    engine.decoder.evaluate_prompt(engine.build_prompt([Message("user", text)]).tokens, None)
    logits = engine.model.lib.llama_get_logits_ith(engine.model.ctx, -1)
    return np.ctypeslib.as_array(logits, shape=(engine.tokenizer.n_vocab,)).copy()


def _engine_with(model: Path, **environ: str) -> Engine:
    return load_engine(settings_from({"MODEL_PATH": str(model), "N_THREADS": "2", **environ}))


def test_kv_cache_k_is_q8_0_by_default_and_attention_stays_close_to_f16(engine: Engine, tiny_model: Path) -> None:
    # GIVEN the default engine and one with an f16 K cache, on a model with 32-value heads
    f16 = _engine_with(tiny_model, KV_CACHE_TYPE_K="f16")

    # WHEN both read the same long prompt
    quantized, exact = _last_logits(engine, LONG_TEXT), _last_logits(f16, LONG_TEXT)

    # THEN the default quantizes K, and the next-token logits move only by quantization noise
    assert engine.model.kv_cache_type_k == "q8_0"
    assert f16.model.kv_cache_type_k == "f16"
    assert np.abs(quantized - exact).max() < 0.05 * exact.std()


def test_kv_cache_k_stays_f16_when_heads_are_not_whole_blocks(tmp_path_factory: pytest.TempPathFactory) -> None:
    # GIVEN a model with 16-value heads: half a q8_0 block each
    model = make_test_model.make_model(tmp_path_factory.mktemp("model") / "heads16.gguf", "tiny-16-value-heads")

    # WHEN the engine is asked for a q8_0 K cache
    requested = _engine_with(model, KV_CACHE_TYPE_K="q8_0")
    f16 = _engine_with(model, KV_CACHE_TYPE_K="f16")

    # THEN it keeps f16 and computes exactly what an f16 engine computes
    assert requested.model.kv_cache_type_k == "f16"
    assert np.array_equal(_last_logits(requested, LONG_TEXT), _last_logits(f16, LONG_TEXT))
