"""Prompt-lookup drafting: the next tokens guessed from where the last few tokens occurred before.

A summary, a translation of names and terms, a JSON extraction copy runs of their input. When the last
``n`` tokens of the text so far (prompt and output) occurred before, the tokens that followed them there are
a cheap guess at what comes next; the model then checks the whole guess in one ``llama_decode`` and keeps the
longest prefix its own greedy choice agrees with (``decoder.Decoder``). No draft model and no extra memory:
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


#: Decode steps that draft nothing after a step whose draft was rejected from its first token.
PAUSE_AFTER_MISS = 2


class DraftLength:
    """How many tokens to draft at the next step: ``maximum``, or none for a while after a draft that missed.

    Checking drafted tokens costs whether or not they are kept, and not in proportion to their number:
    llama.cpp's repacked quantized kernels multiply four tokens at a time, so on the Phi-3-shaped Q4_K_M model
    a step checking 3 drafted tokens (4 in all) costs about what one checking 2 does, 1.9x a plain step, and one
    checking 1 already 1.6x (docs/performance.md). A draft of ``maximum`` (3 by default) whenever there is one,
    shorter only where the text's earlier occurrence ends, wins most; a draft whose first token was wrong says
    the text has stopped copying, so the next ``PAUSE_AFTER_MISS`` steps decode one token each.
    """

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self._paused = 0

    @property
    def k(self) -> int:
        return 0 if self._paused else self.maximum

    def step(self) -> None:
        """A decode step was taken (drafted or not): one step less to wait."""
        self._paused = max(0, self._paused - 1)

    def update(self, accepted: int) -> None:
        """The step's draft kept ``accepted`` tokens."""
        if accepted == 0:
            self._paused = PAUSE_AFTER_MISS
