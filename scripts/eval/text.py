"""The evaluation text the repository ships, and how its tokens are cut into windows as llama.cpp's perplexity tool
cuts them.

The text is Lewis Carroll's "Alice's Adventures in Wonderland" (1865, public domain), data/eval/README.md says where
the copy came from and what was stripped. Windows do not overlap: each is ``n_ctx`` tokens, its first half only
context, its second half scored (the logits at position j are scored against token j + 1), so every scored token
has at least ``n_ctx / 2`` tokens before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scripts.repository import ROOT

#: The shipped evaluation text.
EVAL_TEXT = ROOT / "data" / "eval" / "alice-in-wonderland.txt"


def read_text(path: Path = EVAL_TEXT) -> str:
    return path.read_text(encoding="utf-8")


@dataclass(frozen=True)
class Window:
    """``n_ctx`` tokens of the text; the logits of positions ``first`` .. ``len(tokens) - 2`` are scored."""

    tokens: list[int]
    first: int

    @property
    def scored_positions(self) -> range:
        """The positions whose logits predict a token of the window (the last position predicts none)."""
        return range(self.first, len(self.tokens) - 1)

    @property
    def targets(self) -> list[int]:
        """The token each scored position predicts."""
        return self.tokens[self.first + 1 :]


def windows(tokens: list[int], n_ctx: int, bos: int | None = None) -> list[Window]:
    """The text's whole non-overlapping windows of ``n_ctx`` tokens (a shorter tail is left out, as llama.cpp does).

    With ``bos`` (a vocabulary that adds one), each window's first token is replaced by it, as llama.cpp's tool
    does: every window then starts as a document does. That token is context, never scored.
    """
    if n_ctx < 4:
        raise ValueError(f"a window needs at least 4 tokens, got n_ctx={n_ctx}")
    result = []
    for start in range(0, len(tokens) - n_ctx + 1, n_ctx):
        chunk = list(tokens[start : start + n_ctx])
        if bos is not None:
            chunk[0] = bos
        result.append(Window(chunk, n_ctx // 2))
    return result
