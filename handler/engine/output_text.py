"""A generation's output text as its tokens arrive: stop strings, max_tokens, end of generation, and the text
handed to a sink as it is made."""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence

from handler.domain.requests import GenerationOptions

#: Receives a generation's text as it is made: pieces that, joined, are the completion's text exactly.
TextSink = Callable[[str], None]


class OutputText:
    """One generation's output text as tokens arrive: stop strings, max_tokens and end-of-generation tokens.

    With a sink, the text is also handed on as it comes, each piece whole UTF-8 characters, and never a byte
    that may turn out to begin a stop string (the last ``longest stop - 1`` bytes wait for the next token);
    leading and trailing whitespace wait too, since the completion's text is stripped: the pieces joined are
    exactly ``text``.
    """

    def __init__(
        self,
        options: GenerationOptions,
        eog_ids: frozenset[int],
        eog_texts: Sequence[str],
        ignore_eos: bool,
        sink: TextSink | None = None,
    ) -> None:
        self.max_tokens = options.max_tokens
        # A model may also write its end-of-turn marker as ordinary text pieces (SmolLM2 writes
        # "<|im_end|>" that way after text that spells it): the marker's text stops like the token.
        stops = list(options.stop) if ignore_eos else [*options.stop, *eog_texts]
        self.stops = [stop.encode("utf-8") for stop in dict.fromkeys(stops)]
        self.longest_stop = max((len(stop) for stop in self.stops), default=0)
        self.eog_ids = frozenset() if ignore_eos else eog_ids
        self.output = bytearray()
        self.generated = 0
        self.finish_reason: str | None = None
        self._sink = sink
        self._handed = 0  # bytes of output given to the decoder so far
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self._began = False
        self._held = ""  # trailing whitespace, handed on only once more text follows it

    def accept(self, token: int, piece: Callable[[int], bytes]) -> bool:
        """Take the sampled token; True when the generation is finished (the token needs no decoding)."""
        finished = self._take(token, piece)
        self._hand_on(final=finished)
        return finished

    def _take(self, token: int, piece: Callable[[int], bytes]) -> bool:
        if token in self.eog_ids:
            self.finish_reason = "stop"
            return True
        self.generated += 1
        text = piece(token)
        self.output += text
        if self.stops:
            window = max(0, len(self.output) - len(text) - self.longest_stop + 1)
            found = [i for i in (self.output.find(stop, window) for stop in self.stops) if i >= 0]
            if found:
                del self.output[min(found) :]
                self.finish_reason = "stop"
                return True
        if self.generated >= self.max_tokens:
            self.finish_reason = "length"
            return True
        return False

    def _hand_on(self, final: bool) -> None:
        """Give the sink what can no longer change (a stop found later starts after it: see ``_take``'s window)."""
        if self._sink is None:
            return
        end = len(self.output) if final else len(self.output) - max(self.longest_stop - 1, 0)
        if end <= self._handed and not final:
            return
        text = self._decoder.decode(bytes(self.output[self._handed : max(end, self._handed)]), final=final)
        self._handed = max(end, self._handed)
        if not self._began:
            text = text.lstrip()
            if not text:
                return
            self._began = True
        text = self._held + text
        body = text.rstrip()
        self._held = text[len(body) :]
        if body:
            self._sink(body)

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", errors="ignore").strip()
