"""Chunking long texts: boundaries kept, every chunk within its limit, nothing lost, scripts without spaces cut."""

from __future__ import annotations

import itertools

from handler.usecases.chunking import chunks


def words(text: str) -> int:
    return len(text.split())


def cut_words(text: str, limit: int) -> list[str]:
    parts = text.split()
    return [" ".join(parts[i : i + limit]) for i in range(0, len(parts), limit)]


def characters(text: str) -> int:
    return len(text)


def cut_characters(text: str, limit: int) -> list[str]:
    return [text[i : i + limit] for i in range(0, len(text), limit)]


def test_paragraphs_that_fit_stay_whole_and_every_chunk_is_within_the_limit() -> None:
    paragraphs = [" ".join(f"p{p}w{w}" for w in range(30)) + "." for p in range(10)]
    text = "\n\n".join(paragraphs)

    result = chunks(text, 100, words, cut_words, overlap=0)

    assert all(words(chunk) <= 100 for chunk in result)
    assert [p for chunk in result for p in chunk.split("\n\n")] == paragraphs
    assert len(result) == 4


def test_a_long_paragraph_is_cut_between_sentences_with_a_short_overlap() -> None:
    sentences = [f"Sentence {n} says one thing here." for n in range(40)]
    text = " ".join(sentences)

    result = chunks(text, 50, words, cut_words, overlap=10)

    assert len(result) > 1
    assert all(words(chunk) <= 50 for chunk in result)
    for previous, chunk in itertools.pairwise(result):
        last = previous.split(". ")[-1].rstrip(".")
        assert chunk.startswith(last)  # the previous chunk's last sentence again, for context
    assert set(" ".join(result).split(". ")) >= {s.rstrip(".") for s in sentences[:-1]}


def test_an_unbreakable_run_is_cut_by_tokens_and_empty_paragraphs_vanish() -> None:
    run = " ".join(f"w{n}" for n in range(250))
    text = f"\n\n\n\n{run}\n\n   \n\nEnd."

    result = chunks(text, 100, words, cut_words, overlap=0)

    assert all(chunk.strip() for chunk in result)
    assert all(words(chunk) <= 100 for chunk in result)
    assert " ".join(result).split() == [*run.split(), "End."]


def test_a_script_without_spaces_is_cut_after_its_sentence_ends() -> None:
    sentences = [f"これは{n}番目の文です。" for n in range(60)]
    text = "".join(sentences)

    result = chunks(text, 100, characters, cut_characters, overlap=0)

    assert len(result) > 1
    assert all(characters(chunk) <= 100 for chunk in result)
    assert all(chunk.endswith("。") for chunk in result)
    assert "".join(result) == text
