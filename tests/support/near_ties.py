"""Where two greedy outputs of one prompt part, and how close the model's two best choices were there."""

from __future__ import annotations

from dataclasses import dataclass

from handler.engine import Engine, PromptTokens


@dataclass(frozen=True)
class Parting:
    """The first token where two outputs differ, each output's token there, and the two best next tokens
    after the common part, with their logits, decoded one sequence alone from an empty cache."""

    split: int
    ours: int
    theirs: int
    best: tuple[int, float]
    runner_up: tuple[int, float]

    @property
    def gap(self) -> float:
        return self.best[1] - self.runner_up[1]


def parting(engine: Engine, prompt: PromptTokens, ours_text: str, theirs_text: str) -> Parting:
    """Where ``theirs_text`` parts from ``ours_text`` (texts that differ), as tokens after ``prompt``."""
    ours = engine.model.llama.tokenize(ours_text.encode(), add_bos=False, special=False)
    theirs = engine.model.llama.tokenize(theirs_text.encode(), add_bos=False, special=False)
    split = next(i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b)
    best, runner_up = _top_two_logits(engine, prompt.tokens + ours[:split])
    return Parting(split, ours[split], theirs[split], best, runner_up)


def _top_two_logits(engine: Engine, tokens: list[int]) -> tuple[tuple[int, float], tuple[int, float]]:
    import llama_cpp
    import numpy as np

    engine.clear_cache()
    engine.model.llama.reset()  # type: ignore[no-untyped-call]
    engine.model.llama.eval(tokens)
    row = llama_cpp.llama_get_logits_ith(engine.model.ctx, -1)
    logits = np.ctypeslib.as_array(row, shape=(engine.tokenizer.n_vocab,)).copy()
    engine.clear_cache()
    first, second = (int(token) for token in np.argsort(logits)[::-1][:2])
    return (first, float(logits[first])), (second, float(logits[second]))
