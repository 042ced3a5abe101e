"""One model file's logits over the text's windows: the numbers the divergence maths compares.

Each model is loaded with a context of one window (``n_ctx`` tokens, evaluated in one ``llama_decode``) and asked
for logits at the window's scored positions only, so a window costs one forward pass and ``n_ctx / 2`` rows of the
vocabulary, never the whole text's. The KV cache is cleared between windows: each is a text of its own, as in
llama.cpp's perplexity tool.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from handler.engine.loaded_model import put_token
from scripts.eval.text import Window


class WindowScorer:
    """A model file loaded for scoring windows of ``n_ctx`` tokens."""

    def __init__(self, path: Path, n_ctx: int, threads: int) -> None:
        import llama_cpp

        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        self.path = path
        self.lib: Any = llama_cpp
        self.llama = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=n_ctx,
            n_ubatch=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        self.n_ctx = n_ctx
        self.n_vocab: int = self.llama.n_vocab()
        self._ctx = self.llama._ctx.ctx
        self._batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)
        vocab = self.llama._model.vocab
        add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        #: The token each window starts with when the vocabulary adds one to a text (None: it does not).
        self.bos: int | None = int(llama_cpp.llama_vocab_bos(vocab)) if add_bos else None

    def tokenize(self, text: str) -> list[int]:
        """The text's tokens as the model reads a text, without a BOS (``windows`` puts one where it belongs)."""
        return list(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def logits(self, window: Window) -> NDArray[np.float32]:
        """The logits of the window's scored positions: a row per position, a column per vocabulary entry."""
        if len(window.tokens) > self.n_ctx:
            raise ValueError(f"a window of {len(window.tokens)} tokens does not fit n_ctx={self.n_ctx}")
        lib = self.lib
        lib.llama_memory_clear(lib.llama_get_memory(self._ctx), True)
        scored = window.scored_positions
        for i, token in enumerate(window.tokens):
            put_token(self._batch, i, token, i, 0, i in scored)
        self._batch.n_tokens = len(window.tokens)
        status = lib.llama_decode(self._ctx, self._batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status} on {self.path.name}")
        rows = len(scored)
        # The outputs are the scored positions' rows, in batch order; copied before the next decode reuses them.
        view = np.ctypeslib.as_array(lib.llama_get_logits(self._ctx), shape=(rows * self.n_vocab,))
        return view.reshape(rows, self.n_vocab).copy()

    def close(self) -> None:
        self.lib.llama_batch_free(self._batch)
        self.llama.close()
