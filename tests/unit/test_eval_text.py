"""The shipped evaluation text (the book alone, long enough) and its windows, cut as llama.cpp's perplexity tool cuts
them."""

from __future__ import annotations

import pytest

from scripts.eval.text import EVAL_TEXT, read_text, windows

#: The book is about 26,000 words; the harness needs at least 20,000 tokens of it.
MIN_WORDS = 20_000


def test_the_evaluation_text_is_shipped_with_its_readme() -> None:
    assert EVAL_TEXT.is_file()
    assert (EVAL_TEXT.parent / "README.md").is_file()


def test_the_evaluation_text_is_the_book_alone_without_the_distributors_name() -> None:
    text = read_text()

    assert "gutenberg" not in text.lower()
    assert "ebook" not in text.lower()
    assert text.startswith("ALICE'S ADVENTURES IN WONDERLAND")
    assert "CHAPTER I. Down the Rabbit-Hole" in text
    assert "CHAPTER XII. Alice's Evidence" in text
    assert text.rstrip().endswith("THE END")


def test_the_evaluation_text_is_long_plain_prose() -> None:
    text = read_text()

    assert len(text.split()) >= MIN_WORDS
    assert "\r" not in text
    assert not text.startswith("\ufeff")


def test_windows_do_not_overlap_and_score_their_second_half() -> None:
    tokens = list(range(10))

    cut = windows(tokens, 4)

    assert [w.tokens for w in cut] == [[0, 1, 2, 3], [4, 5, 6, 7]]  # the 2-token tail is left out
    assert [w.first for w in cut] == [2, 2]
    # Position 2 predicts token 3; the last position predicts nothing inside the window.
    assert list(cut[0].scored_positions) == [2]
    assert cut[0].targets == [3]


def test_windows_start_with_bos_when_the_vocabulary_adds_one() -> None:
    cut = windows(list(range(100, 108)), 4, bos=1)

    assert [w.tokens for w in cut] == [[1, 101, 102, 103], [1, 105, 106, 107]]


def test_windows_need_room_for_context_and_a_scored_token() -> None:
    assert windows(list(range(3)), 4) == []
    with pytest.raises(ValueError, match="at least 4"):
        windows(list(range(10)), 2)
