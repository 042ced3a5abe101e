"""A generation's text handed on as it is made: whole characters, no partial stop string, and the pieces joined
are exactly the completion's text (stripped as it is)."""

from __future__ import annotations

from pathlib import Path

import pytest

from handler.core.settings import settings_from
from handler.engine import Engine, _Stream, load_engine
from handler.formats.prompts import Message
from handler.formats.schemas import GenerationOptions

#: Token ids of a fake vocabulary and the bytes each renders as: "é" split over two tokens, a stop string
#: "END" over two, whitespace around the text.
PIECES = {1: b"  Caf", 2: b"\xc3", 3: b"\xa9 au lait", 4: b" \n", 5: b"EN", 6: b"D", 7: b"more", 8: b"  "}


def _streamed(tokens: list[int], stop: list[str], max_tokens: int = 64) -> tuple[list[str], str]:
    pieces: list[str] = []
    stream = _Stream(GenerationOptions(max_tokens=max_tokens, stop=stop), frozenset({0}), [], False, pieces.append)
    for token in tokens:
        if stream.accept(token, PIECES.__getitem__):
            break
    return pieces, stream.text


def test_pieces_are_whole_characters_and_never_a_partial_stop_string() -> None:
    # GIVEN tokens that split "é" in two and spell the stop string "END" over two tokens
    pieces, text = _streamed([1, 2, 3, 4, 5, 6, 7], stop=["END"])
    # THEN the text stops before END, and what was handed on is exactly it
    assert text == "Café au lait"
    assert "".join(pieces) == text
    assert all("EN" not in piece for piece in pieces)
    assert len(pieces) > 1  # handed on as tokens came, not at the end only


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        ([1, 2, 3, 4, 0], "Café au lait"),  # an end-of-generation token: trailing whitespace dropped
        ([8, 1, 2, 3, 4, 7, 8], "Café au lait \nmore"),  # max_tokens: inner whitespace kept, outer stripped
    ],
)
def test_pieces_joined_equal_the_stripped_text(tokens: list[int], expected: str) -> None:
    pieces, text = _streamed(tokens, stop=[], max_tokens=7)
    assert text == expected
    assert "".join(pieces) == text


@pytest.mark.integration
def test_the_engine_hands_on_its_text_as_it_generates(tiny_model: Path) -> None:
    # GIVEN the tiny model generating 24 tokens
    engine: Engine = load_engine(settings_from({"MODEL_PATH": str(tiny_model), "N_THREADS": "2"}))
    prompt = engine.build_prompt([Message("user", "Tell me about trees.")])
    options = GenerationOptions(max_tokens=24)
    pieces: list[str] = []
    # WHEN it generates with a sink
    streamed = engine.generate(prompt, options, ignore_eos=True, sink=pieces.append)
    again = engine.generate(prompt, options, ignore_eos=True)
    # THEN the pieces, several, joined are the completion's text, the same as without a sink (greedy)
    assert len(pieces) > 1
    assert "".join(pieces) == streamed.text == again.text
