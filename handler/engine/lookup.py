"""Prompt-lookup drafting: the next tokens guessed from where the last few tokens occurred before.

A summary, a translation of names and terms, a JSON extraction copy runs of their input. When the last
``n`` tokens of the text so far (prompt and output) occurred before, the tokens that followed them there are
a cheap guess at what comes next; the model then checks the whole guess in one ``llama_decode`` and keeps the
longest prefix its own greedy choice agrees with (``decoding.Decoding``). No draft model and no extra memory:
the guess costs a dictionary lookup.
"""

from __future__ import annotations

from collections.abc import Iterable

#: The longest and shortest n-grams looked up: the longest match is tried first. A single token ("the", ",")
#: occurs everywhere and its continuations are mostly wrong, and every drafted token costs about one prompt
#: token's evaluation, so matches start at two tokens.
NGRAM_MAX = 4
NGRAM_MIN = 2


class PromptLookup:
    """The n-grams of one generation's text so far, each with where it last ended, for drafting.

    ``extend`` adds tokens as they are accepted; ``draft`` proposes up to ``k`` tokens to follow the text.
    """

    def __init__(self, prompt: Iterable[int], ngram_max: int = NGRAM_MAX, ngram_min: int = NGRAM_MIN) -> None:
        if not 1 <= ngram_min <= ngram_max:
            raise ValueError(f"n-gram sizes must satisfy 1 <= min <= max, not {ngram_min}..{ngram_max}")
        self.sizes = range(ngram_max, ngram_min - 1, -1)
        self.tokens: list[int] = []
        # For each size, an n-gram -> the index just past its latest occurrence that has a token after it.
        self._ends: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in self.sizes}
        self.extend(prompt)

    def extend(self, tokens: Iterable[int]) -> None:
        """Add tokens to the text; the n-grams they complete become findable once a token follows them."""
        for token in tokens:
            # The n-grams ending at the current end now have a continuation: the token being added.
            end = len(self.tokens)
            for n in self.sizes:
                if end >= n:
                    self._ends[n][tuple(self.tokens[end - n : end])] = end
            self.tokens.append(token)

    def draft(self, k: int) -> list[int]:
        """Up to ``k`` tokens that followed the latest earlier occurrence of the text's last n-gram (longest n
        first); empty when no n-gram of the allowed sizes occurred before."""
        if k <= 0:
            return []
        length = len(self.tokens)
        for n in self.sizes:
            if length < n:
                continue
            end = self._ends[n].get(tuple(self.tokens[length - n :]))
            if end is not None:
                return self.tokens[end : end + k]
        return []


class DraftLength:
    """How many tokens to draft next: up to ``maximum``, following the recent acceptance.

    Checking a drafted token costs about a prompt token's evaluation whether or not it is kept, so after a
    step that kept ``a`` tokens the next draft is ``2a + 1``: a guess that keeps being right grows quickly
    and one that fails shrinks to a single token at once.
    """

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.k = maximum

    def update(self, accepted: int) -> None:
        self.k = max(1, min(self.maximum, 2 * accepted + 1))
