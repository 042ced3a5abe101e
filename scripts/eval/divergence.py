"""How far a variant's next-token distributions are from the source model's, and the text's perplexity: pure maths.

Everything works on one window's rows (a row per scored position, a column per vocabulary entry) in float64: a
softmax over 49,152 entries in float32 loses the small probabilities a KL divergence sums. The source's side of a
window (``SourceWindow``) is computed once and compared with each variant's logits (``compare``); a
``DivergenceTally`` keeps a few floats per token, never the logits, and summarizes them as llama.cpp's perplexity
tool reports its KL-divergence statistics. KL divergence is in nats, source (P) against variant (Q): KL(P || Q).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

Floats = NDArray[np.float64]


def log_softmax(logits: ArrayLike) -> Floats:
    """Log-probabilities of each row's logits, in float64 (shifted by the row's maximum, so exp never overflows)."""
    values = np.asarray(logits, dtype=np.float64)
    shifted = values - values.max(axis=-1, keepdims=True)
    result: Floats = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return result


def _where_possible(probs: Floats, log_probs: Floats) -> Floats:
    """``log_probs`` with 0 where the probability is 0, so that 0 * log 0 counts as 0, not NaN."""
    if np.isfinite(log_probs).all():
        return log_probs
    result: Floats = np.where(probs > 0.0, log_probs, 0.0)
    return result


def kl_divergence(log_p: ArrayLike, log_q: ArrayLike) -> Floats:
    """KL(P || Q) of each row in nats: sum over the vocabulary of p * (log p - log q)."""
    lp, lq = np.asarray(log_p, dtype=np.float64), np.asarray(log_q, dtype=np.float64)
    p = np.exp(lp)
    with np.errstate(invalid="ignore"):
        result: Floats = np.einsum("ij,ij->i", p, _where_possible(p, lp)) - np.einsum(
            "ij,ij->i", p, _where_possible(p, lq)
        )
    return result


def same_top_token(log_p: ArrayLike, log_q: ArrayLike) -> NDArray[np.bool_]:
    """Whether each row's most likely token is the same under both distributions (greedy decoding's choice)."""
    return np.asarray(np.argmax(log_p, axis=-1) == np.argmax(log_q, axis=-1))


def token_nll(log_probs: ArrayLike, targets: ArrayLike) -> Floats:
    """The negative log-probability of each row's actual next token."""
    lp = np.asarray(log_probs, dtype=np.float64)
    rows = np.arange(lp.shape[0])
    result: Floats = -lp[rows, np.asarray(targets, dtype=np.int64)]
    return result


def perplexity(nll: ArrayLike) -> float:
    """exp of the mean negative log-likelihood per token (a uniform guess over V tokens has perplexity V)."""
    values = np.asarray(nll, dtype=np.float64)
    if values.size == 0:
        raise ValueError("perplexity of no tokens")
    return float(np.exp(values.mean()))


@dataclass(frozen=True)
class SourceWindow:
    """The source model's side of one window, computed once for every variant compared with it."""

    log_p: Floats
    p: Floats
    #: p * log p summed per row: the part of KL(P || Q) that does not depend on the variant.
    neg_entropy: Floats
    top_token: NDArray[np.int64]
    targets: NDArray[np.int64]
    nll: Floats

    @classmethod
    def from_logits(cls, logits: ArrayLike, targets: ArrayLike) -> SourceWindow:
        log_p = log_softmax(logits)
        p = np.exp(log_p)
        with np.errstate(invalid="ignore"):
            neg_entropy = np.einsum("ij,ij->i", p, _where_possible(p, log_p))
        goal = np.asarray(targets, dtype=np.int64)
        return cls(log_p, p, neg_entropy, np.argmax(log_p, axis=-1), goal, token_nll(log_p, goal))


@dataclass(frozen=True)
class TokenFigures:
    """One window's per-token figures of a variant against the source."""

    kld: Floats
    same_top: NDArray[np.bool_]
    nll: Floats


def compare(source: SourceWindow, variant_logits: ArrayLike) -> TokenFigures:
    """A variant's logits of the same window against the source's: KL divergence, same top token, its NLL."""
    log_q = log_softmax(variant_logits)
    p = source.p
    with np.errstate(invalid="ignore"):
        kld = source.neg_entropy - np.einsum("ij,ij->i", p, _where_possible(p, log_q))
    same_top = np.asarray(np.argmax(log_q, axis=-1) == source.top_token)
    return TokenFigures(kld, same_top, token_nll(log_q, source.targets))


@dataclass(frozen=True)
class DivergenceSummary:
    """A variant's figures over the whole text, as llama.cpp's perplexity tool reports them."""

    tokens: int
    mean_kld: float
    median_kld: float
    p99_kld: float
    max_kld: float
    #: Share of tokens (0-1) where the variant's most likely token is the source's.
    top1_agreement: float
    perplexity: float


@dataclass
class DivergenceTally:
    """Per-token figures of one variant gathered window by window (three numbers a token)."""

    windows: list[TokenFigures] = field(default_factory=list)

    def add(self, figures: TokenFigures) -> None:
        self.windows.append(figures)

    def summary(self) -> DivergenceSummary:
        if not self.windows:
            raise ValueError("no window was compared")
        kld = np.concatenate([w.kld for w in self.windows])
        same = np.concatenate([w.same_top for w in self.windows])
        nll = np.concatenate([w.nll for w in self.windows])
        return DivergenceSummary(
            tokens=int(kld.size),
            mean_kld=float(kld.mean()),
            median_kld=float(np.median(kld)),
            p99_kld=float(np.percentile(kld, 99)),
            max_kld=float(kld.max()),
            top1_agreement=float(same.mean()),
            perplexity=perplexity(nll),
        )
