"""The benchmark's settings: the model, inputs and repetitions, the comparison build, the seed's request."""

from __future__ import annotations

import logging

from scripts.repository import ROOT

PRESET = "phi3-mini"


QUANTIZATION = "Q4_K_M"  # the default model's (layers/models/phi-3-mini-4k-instruct-q4.json)


# The first seed's request: its instruction, prompt format, stop string and context size.
SEED_INSTRUCTION = "Summarize the following sentences with bullet points:\n\n"


SEED_STOP = ["<|end|>"]


SEED_N_CTX = 4096


SEED_PROMPT_TOKENS = 368  # the seed's summarize prompt, counted by the real Phi-3 tokenizer


LONG_PROMPT_TOKENS = 2000


BATCH_SIZES = (1, 2, 4, 8)


BANDWIDTH_GIB = 1.5


BANDWIDTH_RUNS = 5


CHILD_TIMEOUT_S = 3600


DISTURBED_SHARE = 0.05  # other processes' share of all CPUs above which a run is flagged


# The comparison build: its flags file and where its shared libraries are unpacked (git-ignored).
COMPARE_FLAGS = ROOT / "layers" / "build" / "cmake-amd64-avx512.args"


COMPARE_LIB_DIR = ROOT / "build" / "llama-avx512"


COMPARE_BUILD = "avx512"


# The CPU flags (/proc/cpuinfo) each ON option of the flags file compiles in (ggml-cpu's CMakeLists).
CPU_FLAGS_OF_OPTION = {
    "GGML_AVX512": ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"),
    "GGML_AVX512_VBMI": ("avx512vbmi",),
    "GGML_AVX512_VNNI": ("avx512_vnni",),
    "GGML_AVX512_BF16": ("avx512_bf16",),
}


# Configurations that run again with the comparison build, and their table labels.
COMPARED = {"b": "b' engine", "c": "c' raw llama_decode"}


DISPATCH_GAIN = 1.15  # the comparison build's speed over the shipped one's that is worth a second build


# Repetitions of the quick run that run (b') and (c') too: on this model a repetition of (a), (b), (c)
# takes about two minutes on 2 cores already, and (b') and (c') add one more; the full run has them in all.
QUICK_COMPARE_REPEATS = 1


def seed_prompt(content: str) -> str:
    """The first seed's prompt string around a user message."""
    return f"<|user|>\n{content}<|end|>\n<|assistant|>"


def per_s(count: float, ms: float) -> float:
    return round(count * 1000.0 / ms, 3) if ms > 0 else 0.0


def quiet_llama_logs() -> None:
    # llama-cpp-python forwards llama.cpp's log to this logger, which prints everything until told otherwise.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)


def compared_config(config: str) -> str:
    """The key of a configuration run with the comparison build: ``b-avx512`` (runs ``b-avx512-summarize-0``)."""
    return f"{config}-{COMPARE_BUILD}"
