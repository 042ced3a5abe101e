"""The process-wide llama.cpp model: loaded once, prompts built safely, generation with timings.

The engine's public names. The Engine (``engine``) holds its parts, one role per module; ``loading`` keeps the
process's one engine. ``llama_cpp`` is imported only when the model or its vocabulary loads.
"""

from handler.engine.completion import Completion
from handler.engine.engine import Engine
from handler.engine.gguf import ggml_type, ggml_type_name, kv_cache_type_k
from handler.engine.identity import ModelIdentity, model_identity
from handler.engine.loading import ProcessEngine, get_engine, load_engine, loaded_engine, process_engine, prompt_counter
from handler.engine.memory import peak_rss_mb
from handler.engine.output_text import OutputText, TextSink
from handler.engine.tokenizer import PromptTokens, Tokenizer

__all__ = [
    "Completion",
    "Engine",
    "ModelIdentity",
    "OutputText",
    "ProcessEngine",
    "PromptTokens",
    "TextSink",
    "Tokenizer",
    "get_engine",
    "ggml_type",
    "ggml_type_name",
    "kv_cache_type_k",
    "load_engine",
    "loaded_engine",
    "model_identity",
    "peak_rss_mb",
    "process_engine",
    "prompt_counter",
]
