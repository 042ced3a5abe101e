"""``make eval-quant``: the real model's file variants measured against the file they came from.

    python -m scripts.eval.quant [--model PATH] [--variants Q8_0,Q4_0,...] [--tokens N] [--ctx 512]
                                 [--events summarize.json,...] [--max-tokens N] [--out-dir bench-results]
                                 [--cache-dir models/variants]

Writes the variants (llama.cpp's quantizer, cached), scores every variant against the source window by window over
the shipped text (KL divergence, top-1 agreement, perplexity), has each file answer the seed events greedily through
the service's engine, and writes eval-quant.json and eval-quant.md into the output folder (the table is printed
too). Progress goes to standard error. Threads: every CPU this process may use.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from handler.core.settings import settings_from
from handler.engine import builds
from scripts.eval.answers import SEED_EVENTS, SeedAnswer, compare_answers, seed_answers
from scripts.eval.divergence import DivergenceSummary, DivergenceTally, SourceWindow, compare, perplexity
from scripts.eval.logits import WindowScorer
from scripts.eval.report import MIN_TEXT_TOKENS, FileFacts, QualityRun, TextFacts, VariantResult, markdown, to_json
from scripts.eval.text import EVAL_TEXT, read_text, windows
from scripts.eval.variants import CACHE_DIR, DEFAULT_VARIANTS, VariantFile, ensure_variants, tensor_types
from scripts.repository import ROOT

#: The source file unless told otherwise: the real model of the tests.
DEFAULT_MODEL = Path("models") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def shown(path: Path) -> str:
    """A path as a record names it: relative to the repository when inside it, else the file's name."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else resolved.name


def measure_divergence(
    model: Path, files: list[VariantFile], text: str, n_ctx: int, limit: int | None, threads: int, text_file: str
) -> tuple[TextFacts, float, list[DivergenceSummary]]:
    """Every variant against the source over the text's windows; the logits of one window at a time."""
    source = WindowScorer(model, n_ctx, threads)
    scorers: list[WindowScorer] = []
    try:
        for variant_file in files:
            scorers.append(WindowScorer(variant_file.path, n_ctx, threads))
        for scorer in scorers:
            if scorer.n_vocab != source.n_vocab:
                raise ValueError(f"{scorer.path.name} has {scorer.n_vocab} tokens, the source {source.n_vocab}")
        all_tokens = source.tokenize(text)
        tokens = all_tokens[:limit] if limit else all_tokens
        cut = windows(tokens, n_ctx, source.bos)
        if not cut:
            raise ValueError(f"{len(tokens)} tokens make no window of {n_ctx}: raise --tokens or lower --ctx")
        progress(f"text: {len(all_tokens):,} tokens; {len(cut)} windows of {n_ctx} on {1 + len(files)} models")
        tallies = [DivergenceTally() for _ in files]
        source_nll = []
        started = time.perf_counter()
        for i, window in enumerate(cut, start=1):
            reference = SourceWindow.from_logits(source.logits(window), window.targets)
            source_nll.append(reference.nll)
            for scorer, tally in zip(scorers, tallies, strict=True):
                tally.add(compare(reference, scorer.logits(window)))
            if i % 5 == 0 or i == len(cut):
                spent = time.perf_counter() - started
                progress(f"  window {i}/{len(cut)}: {spent:.0f} s, about {spent / i * (len(cut) - i):.0f} s left")
    finally:
        for scorer in [source, *scorers]:
            scorer.close()
    scored = sum(len(nll) for nll in source_nll)
    facts = TextFacts(text_file, len(all_tokens), len(cut) * n_ctx, len(cut), n_ctx, scored)
    return facts, perplexity(np.concatenate(source_nll)), [tally.summary() for tally in tallies]


def file_facts(name: str, path: Path, quantize_s: float = 0.0) -> FileFacts:
    return FileFacts(name, shown(path), path.stat().st_size, tensor_types(path), quantize_s)


def run(args: argparse.Namespace) -> QualityRun:
    started = time.perf_counter()
    threads = len(os.sched_getaffinity(0))
    # The build the service would run here, chosen before llama_cpp's first import loads its libraries.
    settings = settings_from({**os.environ, "MODEL_PATH": str(args.model)})
    build = builds.select_build(settings.llama_builds_dir)
    progress(f"variants of {args.model.name} into {args.cache_dir}: {', '.join(args.variants)}")
    files = ensure_variants(args.model, args.variants, args.cache_dir, threads)
    text_facts, source_ppl, summaries = measure_divergence(
        args.model, files, read_text(args.text), args.ctx, args.tokens, threads, shown(args.text)
    )
    progress("seed answers: the source")
    source_answers = seed_answers(args.model, args.events, args.max_tokens)
    results = []
    for variant_file, summary in zip(files, summaries, strict=True):
        progress(f"seed answers: {variant_file.variant.name}")
        answers: list[SeedAnswer] = seed_answers(variant_file.path, args.events, args.max_tokens)
        results.append(
            VariantResult(
                file_facts(variant_file.variant.name, variant_file.path, variant_file.quantize_s),
                summary,
                answers,
                compare_answers(source_answers, answers),
            )
        )
    notes = []
    if text_facts.used_tokens < MIN_TEXT_TOKENS:
        notes.append(f"A short run (--tokens {args.tokens}): fewer than {MIN_TEXT_TOKENS:,} tokens evaluated.")
    if args.max_tokens:
        notes.append(f"Seed answers limited to {args.max_tokens} tokens each (--max-tokens).")
    if [path.name for path in args.events] != [path.name for path in SEED_EVENTS]:
        notes.append(f"Seed answers to {', '.join(path.name for path in args.events)} only (--events).")
    return QualityRun(
        text=text_facts,
        source=file_facts(args.model.name, args.model),
        source_perplexity=source_ppl,
        source_answers=source_answers,
        variants=results,
        threads=threads,
        build=f"{build.build} ({build.reason})",
        seconds=round(time.perf_counter() - started, 1),
        notes=notes,
    )


def names(value: str) -> list[str]:
    """A comma-separated list, blanks dropped."""
    return [name.strip() for name in value.split(",") if name.strip()]


def event_paths(value: str) -> list[Path]:
    """Events by file name in events/ (or by path)."""
    return [Path(name) if Path(name).is_file() else ROOT / "events" / name for name in names(value)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="the source GGUF file (default: %(default)s)")
    parser.add_argument(
        "--variants",
        type=names,
        default=list(DEFAULT_VARIANTS),
        help="llama_ftype names, NAME-pure for every tensor of its type (default: " + ",".join(DEFAULT_VARIANTS) + ")",
    )
    parser.add_argument(
        "--tokens", type=int, default=20480, help="evaluate at most N tokens (default: %(default)s; 0: the whole text)"
    )
    parser.add_argument("--ctx", type=int, default=512, help="window length in tokens (default: %(default)s)")
    parser.add_argument(
        "--max-tokens", type=int, default=None, help="cap each seed answer's tokens (default: the event's own)"
    )
    parser.add_argument(
        "--events",
        type=event_paths,
        default=list(SEED_EVENTS),
        help="seed events answered by every file, names in events/ (default: "
        + ",".join(path.name for path in SEED_EVENTS)
        + ")",
    )
    parser.add_argument("--text", type=Path, default=EVAL_TEXT, help="the text (default: the shipped one)")
    parser.add_argument("--out-dir", type=Path, default=Path("bench-results"), help="default: %(default)s")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="the variants' files (default: %(default)s)")
    args = parser.parse_args(argv)
    if not args.variants:
        parser.error("--variants names no variant")
    if not args.events or not all(path.is_file() for path in args.events):
        parser.error(f"--events: no such event file among {[str(path) for path in args.events]}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "eval-quant.json").write_text(json.dumps(to_json(result), indent=2, ensure_ascii=False) + "\n")
    table = markdown(result)
    (args.out_dir / "eval-quant.md").write_text(table, encoding="utf-8")
    print(table, end="")
    progress(f"wrote {args.out_dir / 'eval-quant.json'} and {args.out_dir / 'eval-quant.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
