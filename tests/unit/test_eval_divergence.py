"""The quality harness's maths on hand-made distributions whose KL divergence, agreement and perplexity are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scripts.eval.divergence import (
    DivergenceTally,
    SourceWindow,
    compare,
    kl_divergence,
    log_softmax,
    perplexity,
    same_top_token,
    token_nll,
)


def test_log_softmax_gives_normalized_log_probabilities_in_float64() -> None:
    logits = np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, 0.0]], dtype=np.float32)

    result = log_softmax(logits)

    assert result.dtype == np.float64
    np.testing.assert_allclose(np.exp(result).sum(axis=1), [1.0, 1.0])
    expected = np.log(np.exp([1.0, 2.0, 3.0]) / np.exp([1.0, 2.0, 3.0]).sum())
    np.testing.assert_allclose(result[0], expected)
    # Large logits do not overflow: two equal maxima share the mass.
    np.testing.assert_allclose(np.exp(result[1, :2]), [0.5, 0.5])


def test_kl_divergence_of_identical_distributions_is_zero() -> None:
    log_p = log_softmax(np.random.default_rng(0).normal(size=(4, 50)))

    np.testing.assert_allclose(kl_divergence(log_p, log_p), np.zeros(4), atol=1e-12)


def test_kl_divergence_of_two_coins_is_the_textbook_value() -> None:
    # KL(P || Q) for P = (1/2, 1/2), Q = (1/4, 3/4): 1/2 ln 2 + 1/2 ln(2/3).
    p = np.log([[0.5, 0.5]])
    q = np.log([[0.25, 0.75]])

    assert kl_divergence(p, q)[0] == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3))
    # It is not symmetric: KL(Q || P) = 1/4 ln(1/2) + 3/4 ln(3/2).
    assert kl_divergence(q, p)[0] == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5))


def test_kl_divergence_counts_zero_probability_tokens_of_the_source_as_nothing() -> None:
    # P = (1, 0), Q = (1/2, 1/2): the second token's 0 * log 0 counts as 0, so KL = 1 * ln(1 / 0.5) = ln 2.
    with np.errstate(divide="ignore"):
        p = np.log([[1.0, 0.0]])
    q = np.log([[0.5, 0.5]])

    assert kl_divergence(p, q)[0] == pytest.approx(math.log(2))


def test_kl_divergence_is_never_negative_on_random_distributions() -> None:
    rng = np.random.default_rng(1)
    p, q = log_softmax(rng.normal(size=(20, 100))), log_softmax(rng.normal(size=(20, 100)))

    assert (kl_divergence(p, q) >= 0).all()


def test_same_top_token_compares_each_rows_most_likely_token() -> None:
    p = np.array([[0.1, 0.9, 0.0], [0.5, 0.2, 0.3]])
    q = np.array([[0.2, 0.7, 0.1], [0.2, 0.5, 0.3]])

    assert same_top_token(p, q).tolist() == [True, False]


def test_perplexity_of_a_uniform_distribution_is_the_vocabulary_size() -> None:
    vocabulary = 49152
    log_p = log_softmax(np.zeros((3, vocabulary)))

    nll = token_nll(log_p, [0, 17, vocabulary - 1])

    assert perplexity(nll) == pytest.approx(vocabulary)


def test_perplexity_of_a_certain_prediction_is_one() -> None:
    assert perplexity([0.0, 0.0]) == 1.0
    with pytest.raises(ValueError, match="no tokens"):
        perplexity([])


def test_compare_agrees_with_the_plain_functions() -> None:
    rng = np.random.default_rng(2)
    source_logits, variant_logits = rng.normal(size=(6, 40)), rng.normal(size=(6, 40))
    targets = rng.integers(0, 40, size=6)

    figures = compare(SourceWindow.from_logits(source_logits, targets), variant_logits)

    log_p, log_q = log_softmax(source_logits), log_softmax(variant_logits)
    np.testing.assert_allclose(figures.kld, kl_divergence(log_p, log_q))
    assert figures.same_top.tolist() == same_top_token(log_p, log_q).tolist()
    np.testing.assert_allclose(figures.nll, token_nll(log_q, targets))


def test_a_variant_identical_to_the_source_has_zero_divergence_and_full_agreement() -> None:
    logits = np.random.default_rng(3).normal(size=(8, 30))
    targets = np.arange(8)
    source = SourceWindow.from_logits(logits, targets)
    tally = DivergenceTally()

    tally.add(compare(source, logits))
    tally.add(compare(source, logits))
    summary = tally.summary()

    assert summary.tokens == 16
    assert summary.mean_kld == pytest.approx(0.0, abs=1e-12)
    assert summary.max_kld == pytest.approx(0.0, abs=1e-12)
    assert summary.top1_agreement == 1.0
    assert summary.perplexity == pytest.approx(perplexity(source.nll))


def test_tally_summarizes_every_window_token_by_token() -> None:
    # Two windows of one token each: P = (1/2, 1/2) against Q = (1/4, 3/4) and against P itself.
    source = SourceWindow.from_logits(np.log([[0.5, 0.5]]), [1])
    tally = DivergenceTally()

    tally.add(compare(source, np.log([[0.25, 0.75]])))
    tally.add(compare(source, np.log([[0.5, 0.5]])))
    summary = tally.summary()

    kld = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)
    assert summary.mean_kld == pytest.approx(kld / 2)
    assert summary.max_kld == pytest.approx(kld)
    assert summary.p99_kld == pytest.approx(0.99 * kld)  # numpy's linear interpolation between the two
    # The ties of P are broken towards the first token; Q's top is the second: one agreement of two.
    assert summary.top1_agreement == 0.5
    assert summary.perplexity == pytest.approx(math.exp((-math.log(0.75) - math.log(0.5)) / 2))


def test_an_empty_tally_has_no_summary() -> None:
    with pytest.raises(ValueError, match="no window"):
        DivergenceTally().summary()
