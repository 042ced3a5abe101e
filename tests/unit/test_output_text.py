"""A generation's output as tokens arrive (handler/engine/output_text.py): the text handed on as it is made, whole
characters and never a partial stop string, the pieces joined exactly the completion's text (stripped as it is);
end-of-generation text spelled in pieces stops it, and is kept when EOS is ignored."""

from __future__ import annotations

import pytest

from handler.domain.requests import GenerationOptions
from handler.engine import OutputText


def test_stream_stops_on_end_of_generation_text_spelled_in_pieces() -> None:
    # GIVEN a model that writes its end-of-turn marker as ordinary text pieces rather than the token
    pieces = {1: b"Hello", 2: b" there<|im", 3: b"_end|>", 4: b" more"}
    stream = OutputText(GenerationOptions(max_tokens=10), frozenset({99}), ("<|im_end|>",), ignore_eos=False)

    # WHEN the pieces arrive
    finished = [stream.accept(token, pieces.__getitem__) for token in (1, 2, 3)]

    # THEN the marker's text ends the generation like the token would, and is cut from the output
    assert finished == [False, False, True]
    assert stream.finish_reason == "stop"
    assert stream.text == "Hello there"


def test_stream_ignoring_eos_keeps_end_of_generation_text() -> None:
    stream = OutputText(GenerationOptions(max_tokens=2), frozenset({99}), ("<|im_end|>",), ignore_eos=True)

    assert stream.accept(1, lambda token: b"<|im_end|>") is False
    assert stream.accept(99, lambda token: b"x") is True
    assert stream.finish_reason == "length"


#: Token ids of a fake vocabulary and the bytes each renders as: "é" split over two tokens, a stop string
#: "END" over two, whitespace around the text.
PIECES = {1: b"  Caf", 2: b"\xc3", 3: b"\xa9 au lait", 4: b" \n", 5: b"EN", 6: b"D", 7: b"more", 8: b"  "}


def _streamed(tokens: list[int], stop: list[str], max_tokens: int = 64) -> tuple[list[str], str]:
    pieces: list[str] = []
    stream = OutputText(GenerationOptions(max_tokens=max_tokens, stop=stop), frozenset({0}), [], False, pieces.append)
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
