"""The process's engine: the model loaded once, on first use, and before that its vocabulary alone for counting.

``llama_cpp`` is imported only when the model or its vocabulary loads, so an environment that answers from the
results table never pays for it.
"""

from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Callable

from handler.core.errors import ModelLoadError
from handler.core.observability import logger
from handler.core.settings import Settings
from handler.engine import builds
from handler.engine.engine import Engine
from handler.engine.gguf import kv_cache_type_k
from handler.engine.identity import model_identity
from handler.engine.loaded_model import load_model
from handler.engine.tokenizer import Tokenizer


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
    model = load_model(path, settings, type_k)
    engine = Engine(
        model,
        identity,
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


class ProcessEngine:
    """The process's one engine, loaded on first use, and before that the vocabularies read alone for counting."""

    def __init__(self, load: Callable[[Settings], Engine]) -> None:
        #: How the engine loads (``load_engine``).
        self.load = load
        #: The engine once this process has loaded it.
        self.engine: Engine | None = None
        #: Vocabularies read in this process, by model path and context length.
        self._tokenizers: dict[tuple[str, int], Tokenizer] = {}
        self._lock = threading.Lock()

    def get(self, settings: Settings) -> tuple[Engine, bool]:
        """The engine, loaded on first use; the flag says whether this call loaded it."""
        with self._lock:
            if self.engine is not None:
                return self.engine, False
            self.engine = self.load(settings)
            return self.engine, True

    def prompt_counter(self, settings: Settings) -> Tokenizer:
        """What builds and counts prompts: the loaded engine's tokenizer, else the model's vocabulary alone
        (loaded once, without the weights), so counting never costs a model load."""
        with self._lock:
            if self.engine is not None:
                return self.engine.tokenizer
            key = (str(settings.model_path), settings.n_ctx)
            if key not in self._tokenizers:
                self._tokenizers[key] = load_tokenizer(settings)
            return self._tokenizers[key]


def load_tokenizer(settings: Settings) -> Tokenizer:
    """The model's chat template and vocabulary, read without its weights (tens of milliseconds)."""
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


#: This process's engine.
process_engine = ProcessEngine(load_engine)


def get_engine(settings: Settings) -> tuple[Engine, bool]:
    """The process-wide engine, loaded on first use; the flag says whether this call loaded it."""
    return process_engine.get(settings)


def loaded_engine() -> Engine | None:
    """The engine if this process has loaded it already."""
    return process_engine.engine


def prompt_counter(settings: Settings) -> Tokenizer:
    """What builds and counts prompts in this process: the loaded engine's tokenizer, else the model's
    vocabulary alone (loaded once, without the weights), so counting never costs a model load."""
    return process_engine.prompt_counter(settings)
