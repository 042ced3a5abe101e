"""What one generation made: its text, why it ended, and llama.cpp's own timings of it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Completion:
    """One generation's text and llama.cpp's own timings of it."""

    text: str
    finish_reason: str
    prompt_tokens: int
    prompt_eval_tokens: int
    prompt_ms: float
    completion_tokens: int
    #: llama_decode steps after the prompt: one per token, or one per drafted run checked at once.
    eval_runs: int
    eval_ms: float
    total_ms: float
    #: Tokens guessed by prompt lookup and checked, and how many of them the model agreed with.
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    #: Each drafting step's (drafted, kept) tokens, in order: what a cost model of drafting needs.
    draft_steps: tuple[tuple[int, int], ...] = ()

    @property
    def prompt_tokens_per_s(self) -> float:
        return _per_second(self.prompt_eval_tokens, self.prompt_ms)

    @property
    def eval_tokens_per_s(self) -> float:
        """Tokens that came out of the decode steps per second: each step's own, plus its accepted drafts."""
        return _per_second(self.eval_runs + self.accepted_tokens, self.eval_ms)

    @property
    def eval_steps_per_s(self) -> float:
        """Decode steps per second: a lower bound of the token speed whatever a text's drafts win."""
        return _per_second(self.eval_runs, self.eval_ms)


def _per_second(count: int, milliseconds: float) -> float:
    return round(count * 1000.0 / milliseconds, 3) if milliseconds > 0 else 0.0
