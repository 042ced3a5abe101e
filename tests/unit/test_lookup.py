"""Prompt-lookup drafting: what is proposed after which n-gram, and how the draft length follows acceptance."""

from __future__ import annotations

import pytest

from handler.engine.lookup import DraftLength, PromptLookup


def test_a_draft_is_what_followed_the_last_ngram_where_it_occurred_before() -> None:
    lookup = PromptLookup([1, 2, 3, 4, 5, 6, 9, 9, 2, 3])

    # the last two tokens (2, 3) occurred at the start; 4, 5, 6 followed them there
    assert lookup.draft(3) == [4, 5, 6]
    assert lookup.draft(10) == [4, 5, 6, 9, 9, 2, 3]  # up to the end of the text, never past it


def test_the_longest_ngram_that_occurred_wins_over_a_later_shorter_one() -> None:
    # (7, 2, 3) occurred once, followed by 40; (2, 3) alone occurred later, followed by 50
    lookup = PromptLookup([7, 2, 3, 40, 1, 2, 3, 50, 7, 2, 3], ngram_max=3, ngram_min=2)

    assert lookup.draft(1) == [40]


def test_the_latest_occurrence_of_an_ngram_is_used() -> None:
    lookup = PromptLookup([2, 3, 10, 2, 3, 20, 2, 3], ngram_max=2, ngram_min=2)

    assert lookup.draft(1) == [20]


def test_tokens_added_after_the_prompt_are_found_and_extend_the_text() -> None:
    lookup = PromptLookup([5, 6, 7], ngram_max=2, ngram_min=2)
    assert lookup.draft(4) == []  # (6, 7) never occurred before

    lookup.extend([8, 6, 7])

    assert lookup.draft(4) == [8, 6, 7]
    assert lookup.tokens == [5, 6, 7, 8, 6, 7]


def test_no_draft_without_an_earlier_ngram_of_the_allowed_sizes() -> None:
    lookup = PromptLookup([1, 2, 3, 9, 3], ngram_max=3, ngram_min=2)

    assert lookup.draft(5) == []  # (9, 3) is new; the single token 3 is below the shortest size
    assert PromptLookup([1, 2, 3, 9, 3], ngram_max=3, ngram_min=1).draft(5) == [9, 3]
    assert PromptLookup([]).draft(4) == []
    assert PromptLookup([1, 2, 1, 2]).draft(0) == []


def test_ngram_sizes_are_checked() -> None:
    with pytest.raises(ValueError, match="1 <= min <= max"):
        PromptLookup([1], ngram_max=1, ngram_min=2)


def test_the_draft_is_the_maximum_and_pauses_after_a_draft_that_missed_from_its_first_token() -> None:
    length = DraftLength(3)
    assert length.k == 3

    length.step()
    length.update(2)  # partly kept: the text still copies
    assert length.k == 3
    length.step()
    length.update(0)  # rejected at once: two plain steps follow
    assert length.k == 0
    length.step()
    assert length.k == 0
    length.step()
    assert length.k == 3
    length.step()
    length.update(3)
    assert length.k == 3
