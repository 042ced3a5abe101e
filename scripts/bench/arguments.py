"""The benchmark's command line: its options and the checks of their combinations."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.configs import DEFAULT_MODEL, QUICK_COMPARE_REPEATS
from bench.documents import (
    DOC_MAX_TOKENS,
    DOCUMENT_TOKENS,
    QUICK_DOC_MAX_TOKENS,
    QUICK_DOCUMENT_TOKENS,
    QUICK_TEXT_TOKENS,
    TEXT_TOKENS,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options of ``python -m bench``; a combination that cannot run is refused with its reason."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Decode-speed benchmark: seed setup, engine, raw llama.cpp, roofline, batching, AVX-512 build.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="64 tokens, the summarize input only, 3 repetitions (batched: one; raw: one prompt sample; "
        f"(b') and (c'): {QUICK_COMPARE_REPEATS} repetition)",
    )
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="GGUF to run; generated if it is missing")
    parser.add_argument("--out-dir", type=Path, default=Path("bench-results"))
    parser.add_argument(
        "--threads", type=int, default=None, help="threads of (b), (c), (e); default: CPUs this process may use"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="repetitions of (a)-(c'), (e); default 3, medians reported (--documents: default 1)",
    )
    parser.add_argument("--max-tokens", type=int, default=None, help="tokens to generate; default 64 quick, 170 full")
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="instead: each engine setting (threads, batch size, K cache, flash attention, mmap) against the defaults",
    )
    parser.add_argument(
        "--documents",
        action="store_true",
        help="instead: four tasks over one text (separate, one after another, batched with a shared prefix) and a "
        "long text's map step (one chunk at a time, batched); writes documents.json",
    )
    parser.add_argument(
        "--drafting",
        action="store_true",
        help="instead: prompt-lookup drafting: acceptance on real text (the real model), the cost of checking k "
        "drafted tokens (the bench model), the projected speedup for Phi-3; writes drafting.json",
    )
    parser.add_argument(
        "--text-tokens",
        type=int,
        default=None,
        help=f"--documents: tokens of the text of the four tasks; default {TEXT_TOKENS} ({QUICK_TEXT_TOKENS} quick)",
    )
    parser.add_argument(
        "--document-tokens",
        type=int,
        default=None,
        help=f"--documents: tokens of the long text; default {DOCUMENT_TOKENS} ({QUICK_DOCUMENT_TOKENS} quick)",
    )
    parser.add_argument(
        "--doc-max-tokens",
        type=int,
        default=None,
        help=f"--documents: tokens generated per request; default {DOC_MAX_TOKENS} ({QUICK_DOC_MAX_TOKENS} quick)",
    )
    parser.add_argument(
        "--unshared-batch",
        action="store_true",
        help="--documents: also the four tasks batched without sharing the text's prefix (adds four whole prompts)",
    )
    parser.add_argument(
        "--no-compare-builds",
        action="store_true",
        help="skip (b') and (c'): the AVX-512 build beside the shipped one (run only on x86_64 hosts with AVX-512)",
    )
    parser.add_argument(
        "--compare-repeats",
        type=int,
        default=None,
        help=f"repetitions that also run (b') and (c'); default: all ({QUICK_COMPARE_REPEATS} in the quick run)",
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if sum((args.sweep, args.documents, args.drafting)) > 1:
        parser.error("--sweep, --documents and --drafting are separate runs: choose one")
    if args.doc_max_tokens is not None and args.doc_max_tokens < 2:
        # One token takes no decode step: nothing of decoding would be measured, and llama.cpp's counters read
        # a count of 0 as 1.
        parser.error("--doc-max-tokens must be at least 2")
    return args
