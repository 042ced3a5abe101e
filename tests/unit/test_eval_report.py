"""The quality harness's report (the adoption rule's ratio, the tables) and its variant names, on made-up results."""

from __future__ import annotations

import pytest

from scripts.eval import published
from scripts.eval.answers import AnswerComparison, SeedAnswer, common_prefix, compare_answers
from scripts.eval.divergence import DivergenceSummary
from scripts.eval.report import FileFacts, QualityRun, TextFacts, VariantResult, markdown, to_json, within_rule
from scripts.eval.variants import Variant


def _variant(name: str, mean_kld: float, identical: bool = True) -> VariantResult:
    summary = DivergenceSummary(
        tokens=255, mean_kld=mean_kld, median_kld=mean_kld / 2, p99_kld=mean_kld * 5, max_kld=mean_kld * 20,
        top1_agreement=0.95, perplexity=11.0,
    )  # fmt: skip
    answer = SeedAnswer("summarize.json", "same" if identical else "other", [1, 2] if identical else [1, 3], "stop")
    comparison = AnswerComparison("summarize.json", identical, 2 if identical else 1, 2, 2)
    return VariantResult(FileFacts(name, f"models/variants/x.{name}.gguf", 90_000_000, {"Q4_0": 1.0}), summary,
                         [answer], [comparison])  # fmt: skip


def _run(*variants: VariantResult) -> QualityRun:
    return QualityRun(
        text=TextFacts("data/eval/alice-in-wonderland.txt", 39_000, 38_912, 76, 512, 19_380),
        source=FileFacts("src.gguf", "models/src.gguf", 98_000_000, {"Q4_1": 0.79, "Q8_0": 0.21}),
        source_perplexity=10.0,
        source_answers=[SeedAnswer("summarize.json", "same", [1, 2], "stop")],
        variants=list(variants),
        threads=2,
        build="packaged",
        seconds=12.0,
    )


def test_each_variant_is_judged_against_this_runs_q4_k_m() -> None:
    run = _run(_variant("Q4_K_M", 0.02), _variant("Q4_0", 0.04), _variant("IQ4_NL", 0.025))

    ratios = {v.file.name: run.kld_ratio(v) for v in run.variants}

    assert ratios == pytest.approx({"Q4_K_M": 1.0, "Q4_0": 2.0, "IQ4_NL": 1.25})
    assert [within_rule(r) for r in ratios.values()] == [True, False, True]


def test_without_a_q4_k_m_variant_no_variant_is_judged() -> None:
    run = _run(_variant("Q4_0", 0.04))

    assert run.kld_ratio(run.variants[0]) is None
    assert within_rule(None) is None
    assert to_json(run)["variants"][0]["kld_within_1_5x_of_q4_k_m"] is None


def test_the_json_record_holds_each_row_and_the_published_figures() -> None:
    run = _run(_variant("Q4_K_M", 0.02), _variant("Q4_0", 0.04, identical=False))

    record = to_json(run)

    assert [v["name"] for v in record["variants"]] == ["Q4_K_M", "Q4_0"]
    q4_0 = record["variants"][1]
    assert q4_0["mean_kld"] == 0.04
    assert q4_0["ppl_ratio"] == pytest.approx(1.1)
    assert q4_0["seed_answers_identical"] == 0
    assert q4_0["seed_answers"][0]["common_prefix_tokens"] == 1
    assert record["text"]["text_tokens"] == 39_000
    assert len(record["published"]["rows"]) == len(published.ROWS)


def test_the_markdown_table_starts_with_the_token_count_and_has_a_row_per_variant() -> None:
    run = _run(_variant("Q4_K_M", 0.02), _variant("Q4_0", 0.04, identical=False))

    table = markdown(run)

    assert "39,000 tokens" in table.splitlines()[2]
    assert "| Q4_K_M | 90.0 |" in table
    assert "| Q4_0 | 90.0 |" in table
    assert "| 0/1 | 2.00x | no |" in table
    assert "| summarize.json | 2 | identical | 1 of 2 |" in table
    assert "| q4_K_M | None | 4.58 |" in table
    assert published.SOURCE in table


def test_the_published_q4_k_m_is_the_row_without_an_importance_matrix() -> None:
    assert (published.Q4_K_M.quantization, published.Q4_K_M.imatrix) == ("q4_K_M", "None")
    assert published.Q4_K_M.ppl_ratio == pytest.approx(1.028160, abs=1e-6)  # the README's own ratio


def test_variant_names_give_llama_file_types() -> None:
    assert Variant.parse("Q4_K_M") == Variant("Q4_K_M", "Q4_K_M", pure=False)
    assert Variant.parse("Q4_K-pure") == Variant("Q4_K-pure", "Q4_K_S", pure=True)
    assert Variant.parse("Q4_0-pure") == Variant("Q4_0-pure", "Q4_0", pure=True)


def test_common_prefix_and_answer_comparison() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([], [1]) == 0
    source = [SeedAnswer("a.json", "x y", [5, 6], "stop"), SeedAnswer("b.json", "z", [7], "length")]
    variant = [SeedAnswer("b.json", "z", [7], "length"), SeedAnswer("a.json", "x w", [5, 8], "stop")]

    result = compare_answers(source, variant)

    assert [(c.event, c.identical, c.common_prefix_tokens) for c in result] == [
        ("a.json", False, 1),
        ("b.json", True, 1),
    ]
