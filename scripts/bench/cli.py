"""The benchmark's command line: its options, the checks of their combinations, and which run they choose.

    python -m scripts.bench [--quick]   the decode benchmark (decode.py)
    --sweep, --drafting, --documents    the other runs (sweep.py, drafting.py, documents.py)
    --child SPEC                        one configuration in a child process (child.py)

The model is generated and the comparison build compiled first, outside every run's timed part.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scripts.bench.builds import prepare_compare_build
from scripts.bench.child import run_child
from scripts.bench.configs import QUICK_COMPARE_REPEATS
from scripts.bench.decode import run_decode
from scripts.bench.documents import (
    DOC_MAX_TOKENS,
    DOCUMENT_TOKENS,
    QUICK_DOC_MAX_TOKENS,
    QUICK_DOCUMENT_TOKENS,
    QUICK_TEXT_TOKENS,
    TEXT_TOKENS,
    run_documents,
)
from scripts.bench.drafting import run_drafting_benchmark
from scripts.bench.menu import run_menu
from scripts.bench.model import ensure_model
from scripts.bench.run_setup import set_up
from scripts.bench.side_by_side import run_side_by_side
from scripts.bench.sweep import run_sweep_benchmark
from scripts.repository import BENCH_MODEL


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options of ``python -m scripts.bench``; a combination that cannot run is refused with its reason."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench",
        description="Decode-speed benchmark: seed setup, engine, raw llama.cpp, roofline, batching, AVX-512 build.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="64 tokens, the summarize input only, 3 repetitions (batched: one; raw: one prompt sample; "
        f"(b') and (c'): {QUICK_COMPARE_REPEATS} repetition)",
    )
    parser.add_argument("--model", type=Path, default=BENCH_MODEL, help="GGUF to run; generated if it is missing")
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
        "--only",
        metavar="SETTING",
        help="--sweep: only the settings whose label starts with SETTING (e.g. N_UBATCH=256), --repeats pairs each",
    )
    parser.add_argument(
        "--engines",
        action="store_true",
        help="instead: llama.cpp and ik_llama.cpp side by side on both builds, the bench model and its requantized "
        "variants (prompt and decode tok/s by one loop), and greedy agreement on the real model; writes engines.json",
    )
    parser.add_argument(
        "--menu",
        action="store_true",
        help="instead: a generated stand-in of each menu model's shapes (generated once) on both builds, their speed "
        "over Phi-3-mini's and the projected cost per 1,000 summaries; writes menu.json",
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
    if sum((args.sweep, args.documents, args.drafting, args.engines, args.menu)) > 1:
        parser.error("--sweep, --documents, --drafting, --engines and --menu are separate runs: choose one")
    if args.doc_max_tokens is not None and args.doc_max_tokens < 2:
        # One token takes no decode step: nothing of decoding would be measured, and llama.cpp's counters read
        # a count of 0 as 1.
        parser.error("--doc-max-tokens must be at least 2")
    return args


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = parse_args(argv)
    if args.child:
        return run_child(args.child)
    out_dir: Path = args.out_dir
    work = out_dir / "runs"
    work.mkdir(parents=True, exist_ok=True)

    # Generating the model and compiling the comparison build happen once, before the timed part.
    model = ensure_model(args.model)
    if args.documents:
        return run_documents(args, model, out_dir, work)
    if args.engines or args.menu:
        args.quick = True  # the seed prompt's 368 tokens
        setup = set_up(args, model, out_dir, work)
        tokens = setup.inputs["summarize"]["tokens"]
        repeats, max_tokens = args.repeats or 2, args.max_tokens or 96
        if args.menu:
            return run_menu(tokens, setup.threads, setup.type_k, repeats, max_tokens, out_dir, work)
        return run_side_by_side(args.model, tokens, setup.threads, setup.type_k, repeats, max_tokens, out_dir, work)
    compare = prepare_compare_build(not args.no_compare_builds) if not (args.sweep or args.drafting) else None
    if compare and compare.get("skipped"):
        print(f"build comparison skipped: {compare['skipped']}")
    setup = set_up(args, model, out_dir, work)
    if args.sweep:
        return run_sweep_benchmark(setup, args.only)
    if args.drafting:
        return run_drafting_benchmark(setup, args.quick)
    return run_decode(setup, args, compare)
