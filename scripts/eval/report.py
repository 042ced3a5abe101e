"""A quality run's results, and how they are written: the JSON record and the Markdown table beside the published
figures.

The adoption rule of the issue is a variant's KL divergence at most 1.5x that of the published Q4_K_M. The published
figure is another model against FP16; the comparable figure here is each variant's mean KLD against this run's own
Q4_K_M variant, so the report states that ratio. Adopting a variant also needs its speed, which the benchmark
measures: this report gives the quality side only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from scripts.eval import published
from scripts.eval.answers import AnswerComparison, SeedAnswer
from scripts.eval.divergence import DivergenceSummary

#: The variant every other is compared with under the adoption rule.
REFERENCE_VARIANT = "Q4_K_M"
#: The text length the issue asks the evaluation to cover.
MIN_TEXT_TOKENS = 20_000


@dataclass(frozen=True)
class TextFacts:
    """The text and how much of it was scored."""

    file: str
    #: The whole text's tokens in the source model's vocabulary.
    text_tokens: int
    #: The tokens evaluated (``--tokens`` may limit them; a tail shorter than a window is left out).
    used_tokens: int
    windows: int
    n_ctx: int
    scored_tokens: int


@dataclass(frozen=True)
class FileFacts:
    """A model file: its name, size and what its weights are stored as."""

    name: str
    file: str
    bytes: int
    #: Share of the weights (0-1) in each tensor type.
    tensor_types: dict[str, float]
    #: Seconds llama.cpp's quantizer took to write it here; 0 for the source or a file found in the cache.
    quantize_s: float = 0.0

    @property
    def megabytes(self) -> float:
        return self.bytes / 1e6


@dataclass(frozen=True)
class VariantResult:
    """One variant measured against the source."""

    file: FileFacts
    divergence: DivergenceSummary
    answers: list[SeedAnswer]
    comparisons: list[AnswerComparison]

    @property
    def identical_answers(self) -> int:
        return sum(c.identical for c in self.comparisons)


@dataclass(frozen=True)
class QualityRun:
    """Everything one run measured."""

    text: TextFacts
    source: FileFacts
    source_perplexity: float
    source_answers: list[SeedAnswer]
    variants: list[VariantResult]
    threads: int
    build: str
    seconds: float
    notes: list[str] = field(default_factory=list)

    def reference(self) -> VariantResult | None:
        """This run's Q4_K_M variant, when it was measured."""
        return next((v for v in self.variants if v.file.name == REFERENCE_VARIANT), None)

    def kld_ratio(self, variant: VariantResult) -> float | None:
        """The variant's mean KL divergence over this run's Q4_K_M variant's (None without one)."""
        reference = self.reference()
        if reference is None or reference.divergence.mean_kld <= 0:
            return None
        return variant.divergence.mean_kld / reference.divergence.mean_kld


def within_rule(ratio: float | None) -> bool | None:
    """Whether a KLD ratio to Q4_K_M meets the issue's adoption rule (None: no ratio to judge)."""
    return None if ratio is None else ratio <= published.ADOPTION_KLD_FACTOR


def to_json(run: QualityRun) -> dict[str, Any]:
    """The run as the JSON record bench-results/eval-quant.json holds."""
    variants = []
    for variant in run.variants:
        ratio = run.kld_ratio(variant)
        variants.append(
            {
                **asdict(variant.file),
                **asdict(variant.divergence),
                "ppl_ratio": variant.divergence.perplexity / run.source_perplexity,
                "kld_ratio_to_q4_k_m": ratio,
                "kld_within_1_5x_of_q4_k_m": within_rule(ratio),
                "seed_answers_identical": variant.identical_answers,
                "seed_answers": [
                    {**asdict(c), "text": a.text, "finish_reason": a.finish_reason}
                    for c, a in zip(variant.comparisons, variant.answers, strict=True)
                ],
            }
        )
    return {
        "text": asdict(run.text),
        "source": {
            **asdict(run.source),
            "perplexity": run.source_perplexity,
            "seed_answers": [
                {"event": a.event, "tokens": len(a.tokens), "text": a.text, "finish_reason": a.finish_reason}
                for a in run.source_answers
            ],
        },
        "variants": variants,
        "adoption_rule": (
            f"mean KLD at most {published.ADOPTION_KLD_FACTOR}x that of Q4_K_M; judged here against this run's "
            "Q4_K_M variant (kld_ratio_to_q4_k_m); the adoption also needs the speed the benchmark measures"
        ),
        "published": {
            "source": published.SOURCE,
            "rows": [{**asdict(row), "ppl_ratio": row.ppl_ratio} for row in published.ROWS],
        },
        "threads": run.threads,
        "build": run.build,
        "seconds": run.seconds,
        "notes": run.notes,
    }


def _types(shares: dict[str, float]) -> str:
    """The tensor types holding at least 1% of the weights, largest first."""
    return ", ".join(f"{name} {share:.0%}" for name, share in shares.items() if share >= 0.01)


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "no")


def markdown(run: QualityRun) -> str:
    """The quality table, the seed answers and the published figures, as Markdown."""
    text, source = run.text, run.source
    lines = [
        "# Model-file variants of the real model: quality against the file they came from",
        "",
        f"Text: {text.file}, {text.text_tokens:,} tokens of {source.name}; {text.used_tokens:,} evaluated in "
        f"{text.windows} windows of {text.n_ctx}, {text.scored_tokens:,} scored (each window's second half).",
        "",
        f"Source: {source.name} ({_types(source.tensor_types)}), {source.megabytes:.1f} MB, perplexity "
        f"{run.source_perplexity:.3f}. The variants are requantized from this 4-bit file by llama.cpp's quantizer: "
        "they measure what requantizing the shipped file costs, not what each type costs against FP16 weights.",
        "",
        "KLD: KL(source || variant) per scored token, in nats. Top-1: the variant's most likely token is the "
        "source's. Seed answers: greedy answers to events/ identical to the source's.",
        "",
        "| variant | file MB | tensor types | mean KLD | p99 KLD | max KLD | top-1 agreement % | PPL | PPL ratio "
        "| seed answers identical | KLD / Q4_K_M (this run) | within 1.5x |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        f"| {source.name} (source) | {source.megabytes:.1f} | {_types(source.tensor_types)} | 0 | 0 | 0 | 100 "
        f"| {run.source_perplexity:.3f} | 1 | {len(run.source_answers)}/{len(run.source_answers)} | | |",
    ]
    for variant in run.variants:
        d, ratio = variant.divergence, run.kld_ratio(variant)
        answers = f"{variant.identical_answers}/{len(variant.comparisons)}"
        lines.append(
            f"| {variant.file.name} | {variant.file.megabytes:.1f} | {_types(variant.file.tensor_types)} "
            f"| {d.mean_kld:.5f} | {d.p99_kld:.4f} | {d.max_kld:.3f} | {d.top1_agreement * 100:.2f} "
            f"| {d.perplexity:.3f} | {d.perplexity / run.source_perplexity:.4f} "
            f"| {answers} | {_ratio(ratio)} | {_verdict(within_rule(ratio))} |"
        )
    lines += [
        "",
        f"Adoption rule (issue 33): a variant's KL divergence at most {published.ADOPTION_KLD_FACTOR}x that of the "
        "published Q4_K_M. The comparable figure here is the ratio to this run's Q4_K_M variant (last columns); "
        "adopting a variant also needs its measured speed (the benchmark), not given here.",
        "",
        "## Seed answers (greedy): tokens in common with the source's answer from the start",
        "",
        "| event | source tokens | " + " | ".join(v.file.name for v in run.variants) + " |",
        "|---|---:|" + "---:|" * len(run.variants),
    ]
    for i, answer in enumerate(run.source_answers):
        cells = []
        for variant in run.variants:
            c = variant.comparisons[i]
            cells.append("identical" if c.identical else f"{c.common_prefix_tokens} of {c.variant_tokens}")
        lines.append(f"| {answer.event} | {len(answer.tokens)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Published figures: LLaMA-3-8B against FP16 on Wikitext-2 (llama.cpp)",
        "",
        "| type | imatrix | size GiB | PPL | ΔPPL | PPL ratio | mean KLD | same top % | KLD / q4_K_M (None) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in published.ROWS:
        same = "" if row.same_top_percent is None else f"{row.same_top_percent:.3f}"
        lines.append(
            f"| {row.quantization} | {row.imatrix} | {row.size_gib:.2f} | {row.ppl:.4f} | {row.delta_ppl:.4f} "
            f"| {row.ppl_ratio:.4f} | {row.mean_kld:.6f} | {same} | {row.mean_kld / published.Q4_K_M.mean_kld:.2f}x |"
        )
    lines += ["", f"Source: {published.SOURCE}.", ""]
    tail = [
        f"Measured with {run.threads} thread{'s' if run.threads > 1 else ''}, llama.cpp build: {run.build}; "
        f"the run took {run.seconds:.0f} s.",
        *run.notes,
    ]
    return "\n".join(lines + tail) + "\n"
