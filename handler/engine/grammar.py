"""Grammars parsed by llama.cpp itself: the check a response format's grammar passes before it is promised.

llama.cpp's grammar parser prints what it refuses, the grammar included (so the caller's pattern), to the
process's stderr: every parse runs with file descriptor 2 pointed at /dev/null, so nothing a caller sent
reaches the function's logs that way.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

#: One silencing at a time: file descriptor 2 is the process's, not a thread's.
_stderr_lock = threading.Lock()


@contextlib.contextmanager
def stderr_silenced() -> Iterator[None]:
    """File descriptor 2 at /dev/null while the block runs (C code writes there, not through sys.stderr)."""
    with _stderr_lock:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


def grammar_sampler(lib: Any, vocab: Any, rules: str) -> Any | None:
    """llama.cpp's grammar sampler for ``rules`` (root rule ``root``), or None when its parser refuses them."""
    with stderr_silenced():
        sampler = lib.llama_sampler_init_grammar(vocab, rules.encode("utf-8"), b"root")
    return sampler or None
