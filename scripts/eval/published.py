"""llama.cpp's published quality figures per quantization type, for a larger model, with their source.

They are LLaMA-3-8B's figures against its FP16 weights on Wikitext-2, from llama.cpp's perplexity tool; this
harness measures a 135M model's requantized files against a 4-bit file on other text. The two sets are not the
same measurement: they sit side by side to show the order of the types and the size of their losses.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Where the figures come from.
SOURCE = (
    "llama.cpp, tools/perplexity/README.md, section 'LLaMA 3 8b Scoreboard' (LLaMA-3-8B against FP16 on the "
    "Wikitext-2 test set, llama.cpp revision f364eb6f, CUDA backend; 'Same top p' from the section 'LLaMA 2 vs. "
    "LLaMA 3 Quantization comparison'), read at commit 73f6cfa30454317a3aa13e482beb4e5fff3deaa6 of the repository"
)
#: The FP16 model's perplexity in that table, from which the PPL ratios follow (q4_K_M's PPL less its ΔPPL).
BASE_PPL = 6.407115 - 0.175482


@dataclass(frozen=True)
class PublishedRow:
    """One quantization type's published figures (``imatrix``: the importance matrix used, "None" for none)."""

    quantization: str
    imatrix: str
    size_gib: float
    ppl: float
    delta_ppl: float
    mean_kld: float
    #: "Same top p" in percent, where the README gives it.
    same_top_percent: float | None = None

    @property
    def ppl_ratio(self) -> float:
        return self.ppl / BASE_PPL


#: The rows of the types this harness measures or falls back to, in the README's order (by KL divergence).
ROWS = (
    PublishedRow("q8_0", "None", 7.96, 6.234284, 0.002650, 0.001355, 97.674),
    PublishedRow("q6_K", "None", 6.14, 6.253382, 0.021748, 0.005452, 96.031),
    PublishedRow("q5_K_M", "None", 5.33, 6.288607, 0.056974, 0.010762),
    PublishedRow("q5_0", "None", 5.21, 6.363224, 0.131591, 0.022239),
    PublishedRow("q4_K_M", "WT 10m", 4.58, 6.382937, 0.151303, 0.028152),
    PublishedRow("q4_K_M", "None", 4.58, 6.407115, 0.175482, 0.031273, 91.901),
    PublishedRow("q4_K_S", "WT 10m", 4.37, 6.409697, 0.178064, 0.031951),
    PublishedRow("iq4_NL", "WT 10m", 4.35, 6.455593, 0.223959, 0.035742),
    PublishedRow("iq4_XS", "WT 10m", 4.14, 6.459705, 0.228071, 0.036334),
    PublishedRow("q4_K_S", "None", 4.37, 6.500529, 0.268895, 0.043136),
    PublishedRow("q4_1", "None", 4.78, 6.682737, 0.451103, 0.071683),
    PublishedRow("q4_0", "None", 4.34, 6.700147, 0.468514, 0.071940),
)
#: The published Q4_K_M (no importance matrix, as this harness quantizes) that the adoption rule is stated against.
Q4_K_M = ROWS[5]
#: The issue's rule for adopting a variant: its KL divergence at most this times Q4_K_M's.
ADOPTION_KLD_FACTOR = 1.5
