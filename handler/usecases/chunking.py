"""Texts longer than the context window cut into chunks that fit: on paragraph and sentence boundaries,
counted in the model's tokens, with a small overlap.

Paragraphs (blank lines) are kept whole where they fit; a longer one is cut between sentences (``.``,
``!``, ``?`` and their full-width forms ``。！？``, so a script without spaces is cut too); a sentence
longer than a chunk (one unbreakable run) is cut by tokens. Each chunk after the first begins with the
last sentence of the one before when it is short, so no statement is split from its context.
"""

from __future__ import annotations

import re
from collections.abc import Callable

#: Between sentences: after a sentence end (Latin or full-width), before what follows.
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")

Counter = Callable[[str], int]
Cutter = Callable[[str, int], list[str]]


def chunks(text: str, limit: int, count: Counter, cut: Cutter, overlap: int) -> list[str]:
    """``text`` in pieces of at most ``limit`` tokens (by ``count``), in order, none empty.

    ``cut(text, limit)`` splits a run with no boundary into pieces of at most ``limit`` tokens;
    ``overlap`` is the most tokens of the previous chunk's last sentence repeated at a chunk's start.
    The counts of joined pieces are estimates (a token may straddle a join), so ``limit`` should keep a
    few tokens of room.
    """
    if limit < 1:
        raise ValueError(f"a chunk must hold at least 1 token, not {limit}")
    result: list[str] = []
    current: list[tuple[str, str]] = []
    size = 0
    for piece, separator in _pieces(text, limit, count, cut):
        tokens = count(piece)
        if current and size + tokens > limit:
            result.append(_joined(current))
            tail, tail_separator = current[-1]
            tail_tokens = count(tail)
            keep = tail_tokens <= overlap and tail_tokens + tokens <= limit and tail_separator == " "
            current, size = ([(tail, tail_separator)], tail_tokens) if keep else ([], 0)
        current.append((piece, separator))
        size += tokens
    if current:
        result.append(_joined(current))
    return result


def _joined(pieces: list[tuple[str, str]]) -> str:
    return "".join(piece + separator for piece, separator in pieces).strip()


def _pieces(text: str, limit: int, count: Counter, cut: Cutter) -> list[tuple[str, str]]:
    """Paragraphs that fit, else their sentences, else token-cut runs, each with what follows it."""
    pieces: list[tuple[str, str]] = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        if count(paragraph) <= limit:
            pieces.append((paragraph, "\n\n"))
            continue
        sentences = [sentence.strip() for sentence in _SENTENCE_END.split(paragraph) if sentence.strip()]
        for sentence in sentences:
            parts = [sentence] if count(sentence) <= limit else cut(sentence, limit)
            pieces.extend((part, "" if _no_spaces(part) else " ") for part in parts)
        if pieces:
            pieces[-1] = (pieces[-1][0], "\n\n")
    return pieces


def _no_spaces(text: str) -> bool:
    """A script written without spaces between sentences (Japanese, Chinese): joined as it was."""
    return bool(text) and text[-1] in "。！？"
