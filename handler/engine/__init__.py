"""The process-wide llama.cpp model: loaded once, prompts built safely, generation with timings.

``llama_cpp`` is imported only when the model loads, so an environment that answers from the
results table never pays for it.

The Engine is assembled here from one module per job: ``identity`` (the model's file name and hash),
``gguf`` (what the GGUF says before loading), ``prompt`` (chat template and special-token safety),
``decoding`` (one request at a time) and ``batched`` (several requests in one context).
"""

from __future__ import annotations

import atexit
import ctypes
import threading
import time
from typing import TYPE_CHECKING

from handler.core.errors import ModelLoadError
from handler.core.observability import logger
from handler.core.settings import Settings
from handler.engine import builds
from handler.engine.batched import BatchedDecoding
from handler.engine.decoding import Completion, peak_rss_mb
from handler.engine.gguf import _quantization_name, ggml_type, ggml_type_name, kv_cache_type_k
from handler.engine.identity import ModelIdentity, model_identity
from handler.engine.prompt import PromptTokens, Tokenizer
from handler.engine.text_stream import TextSink, _Stream
from handler.formats.schemas import ModelInfo

if TYPE_CHECKING:
    from llama_cpp import Llama

__all__ = [
    "Completion",
    "Engine",
    "ModelIdentity",
    "PromptTokens",
    "TextSink",
    "Tokenizer",
    "_Stream",
    "get_engine",
    "ggml_type",
    "ggml_type_name",
    "kv_cache_type_k",
    "load_engine",
    "loaded_engine",
    "model_identity",
    "peak_rss_mb",
    "prompt_counter",
]


class Engine(BatchedDecoding):
    """One loaded model and the only way the service talks to llama.cpp."""

    def __init__(
        self,
        llama: Llama,
        identity: ModelIdentity,
        n_threads: int,
        load_ms: float,
        parallel: int = 1,
        batch_n_ctx: int | None = None,
        spec_draft_max: int = 0,
    ) -> None:
        import llama_cpp

        self._llama = llama
        self._lib = llama_cpp
        self._lock = threading.Lock()
        self.identity = identity
        self.n_threads = n_threads
        self.load_ms = load_ms
        self.n_ctx = llama.n_ctx()
        self._read_prompting(llama, identity.file)
        self._ctx = llama._ctx.ctx
        self.n_batch = llama.n_batch
        #: Requests decoded together by generate_batch, and the KV cache size they share.
        self.parallel = parallel
        self.batch_n_ctx = max(batch_n_ctx or self.n_ctx, self.n_ctx)
        self._batch = None
        self._batch_unified = True
        #: The K cache type in use (the batch context copies the main context's parameters).
        self.kv_cache_type_k = ggml_type_name(llama.context_params.type_k)
        self._kv_tokens = []
        #: Speeds measured on this machine, for predicting whether a request fits a time budget.
        self.measured_prompt_tokens_per_s = None
        self.measured_eval_tokens_per_s = None
        self._piece_buffer = ctypes.create_string_buffer(64)
        self.spec_draft_max = spec_draft_max
        self._draft_batch = None
        self.info = ModelInfo(
            file=identity.file,
            sha256=identity.sha256,
            quantization=_quantization_name(llama_cpp, llama.metadata.get("general.file_type")),
            context_length=self.n_ctx,
        )


def load_engine(settings: Settings) -> Engine:
    """Load the GGUF named by the settings; errors say which file and why."""
    path = settings.model_path
    if not path.is_file():
        raise ModelLoadError(f"model file not found: MODEL_PATH={str(path)!r}")
    identity = model_identity(path, settings.model_sha256)
    # Before llama_cpp's first import, which loads the libraries of the build chosen here.
    build = builds.select_build(settings.llama_builds_dir)
    import llama_cpp

    started = time.perf_counter()
    type_k = kv_cache_type_k(path, settings.kv_cache_type_k)
    try:
        llama = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=settings.n_ctx,
            n_threads=settings.n_threads,
            n_threads_batch=settings.threads_batch,
            n_batch=settings.n_batch,
            n_ubatch=settings.n_ubatch,
            use_mmap=settings.use_mmap,
            type_k=ggml_type(type_k),
            flash_attn=settings.flash_attn,
            verbose=False,
        )
    except (ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"llama.cpp could not load {path.name}: {exc}") from exc
    # Close before interpreter shutdown tears down the ctypes bindings the model's finalizer needs.
    atexit.register(llama.close)
    engine = Engine(
        llama,
        identity,
        settings.n_threads,
        0.0,
        settings.batch_parallel,
        settings.batch_n_ctx,
        spec_draft_max=settings.spec_draft_max,
    )
    engine.warm_up()
    engine.load_ms = round((time.perf_counter() - started) * 1000.0, 3)
    # Which instruction sets this llama.cpp was compiled for: the build is what decides the speed.
    logger.info(
        "model loaded",
        model=identity.file,
        load_ms=engine.load_ms,
        **build.log_fields(),
        system_info=llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip(),
    )
    return engine


_engine: Engine | None = None
_engine_lock = threading.Lock()


def get_engine(settings: Settings) -> tuple[Engine, bool]:
    """The process-wide engine, loaded on first use; the flag says whether this call loaded it."""
    global _engine
    with _engine_lock:
        if _engine is not None:
            return _engine, False
        _engine = load_engine(settings)
        return _engine, True


def loaded_engine() -> Engine | None:
    """The engine if this process has loaded it already."""
    return _engine


#: Vocabularies read in this process, by model path and context length.
_tokenizers: dict[tuple[str, int], Tokenizer] = {}


def prompt_counter(settings: Settings) -> Engine | Tokenizer:
    """What builds and counts prompts in this process: the loaded engine, else the model's vocabulary alone
    (loaded once, without the weights), so counting never costs a model load."""
    with _engine_lock:
        if _engine is not None:
            return _engine
        key = (str(settings.model_path), settings.n_ctx)
        if key not in _tokenizers:
            _tokenizers[key] = _load_tokenizer(settings)
        return _tokenizers[key]


def _load_tokenizer(settings: Settings) -> Tokenizer:
    path = settings.model_path
    if not path.is_file():
        raise ModelLoadError(f"model file not found: MODEL_PATH={str(path)!r}")
    builds.select_build(settings.llama_builds_dir)
    import llama_cpp

    try:
        # The context of a vocabulary has no layers (no memory), and its size is the engine's, as llama.cpp
        # rounds it: the window the prompt is checked against is the one it will be generated in.
        llama = llama_cpp.Llama(model_path=str(path), vocab_only=True, n_ctx=settings.n_ctx or 1, verbose=False)
    except (ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"llama.cpp could not read the vocabulary of {path.name}: {exc}") from exc
    atexit.register(llama.close)
    n_ctx = llama.n_ctx()
    if not settings.n_ctx:  # the model's own window, which a vocabulary-only load does not read
        arch = llama.metadata.get("general.architecture", "")
        n_ctx = int(llama.metadata.get(f"{arch}.context_length", n_ctx))
    return Tokenizer(llama, llama_cpp, path.name, n_ctx)
