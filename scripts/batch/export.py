"""Export finished results with their metrics, and report on the batch: counts, speeds, compute and cost.

    python -m scripts.batch.export --table TABLE --out results.jsonl [--format csv] [--plot decode.png]
    python -m scripts.batch.export --table TABLE --input batch.jsonl --out output.jsonl --errors errors.jsonl

With --input, the results of one batch file come back in its format, joined on the caller's ids
(handler/formats/batch_lines.py): OpenAI Batch output and error lines for an OpenAI Batch input file, Bedrock
records with modelOutput or error for a Bedrock file, answers by line number for native requests. The
file is read again and each line's request id computed as enqueue.py did (so --model must name the same
model); the items are read by id (BatchGetItem), never by scanning the table. Finished lines go to
--out, failed and invalid ones to --errors; lines still queued or running are counted, in neither.

Prices are AWS Lambda's on-demand prices in us-east-1 per GB-second (change them with --price-per-gb-s).

JSONL is the lossless format, for programs. CSV is for spreadsheets, which run a cell that starts with
=, +, -, @, a tab or a carriage return as a formula: as OWASP's CSV Injection guidance says, such a text
cell is written with a single quote before it, and every text cell is quoted (numbers are written as
numbers). The output of a bullet-point summary ("- ...") therefore starts with "'" in CSV.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from handler.domain.answers import Metrics, Status
from handler.formats.batch_lines import FORMAT_NAMES, BatchFormat
from handler.formats.jsonl import jsonl_values
from handler.storage.result_store import ResultStore
from handler.usecases.batch_export import Exported, export
from scripts.batch.service import build_service, served_model
from scripts.repository import SERVED_MODEL

PRICE_PER_GB_S = {"x86_64": 0.0000166667, "arm64": 0.0000133334}
PRICE_PER_REQUEST = 0.20 / 1_000_000
METRIC_NAMES = list(Metrics.model_fields)
#: OWASP CSV Injection: a cell starting with one of these is read as a formula by spreadsheet apps.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile (inclusive method); 0 for no values."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(fraction * 100) - 1]


def summarize(
    items: list[dict[str, Any]], counts: dict[str, int], memory_mb: int, arch: str, price: float
) -> dict[str, Any]:
    """The batch report: counts by status, tokens, speed percentiles, compute seconds and cost."""
    metrics = [item.get("metrics") or {} for item in items]
    prompt_speeds = [float(m["prompt_tokens_per_s"]) for m in metrics if m.get("prompt_tokens_per_s")]
    decode_speeds = [float(m["eval_tokens_per_s"]) for m in metrics if m.get("eval_tokens_per_s")]
    compute_s = sum(float(m.get("total_ms", 0.0)) + float(m.get("load_ms") or 0.0) for m in metrics) / 1000.0
    gb_seconds = compute_s * memory_mb / 1024.0
    return {
        "counts": counts,
        "prompt_tokens": sum(int(m.get("prompt_tokens", 0)) for m in metrics),
        "completion_tokens": sum(int(m.get("completion_tokens", 0)) for m in metrics),
        "prompt_tokens_per_s": {"p50": percentile(prompt_speeds, 0.5), "p95": percentile(prompt_speeds, 0.95)},
        "eval_tokens_per_s": {"p50": percentile(decode_speeds, 0.5), "p95": percentile(decode_speeds, 0.95)},
        "compute_seconds": round(compute_s, 3),
        "memory_mb": memory_mb,
        "architecture": arch,
        "estimated_cost_usd": round(gb_seconds * price + len(items) * PRICE_PER_REQUEST, 6),
    }


def spreadsheet_cell(value: Any) -> Any:
    """A CSV cell that no spreadsheet runs as a formula: text starting with a formula character gets a
    single quote before it (OWASP); numbers, booleans and empty cells are left as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


@contextlib.contextmanager
def whole_file(out: Path, newline: str) -> Iterator[TextIO]:
    """A text file that appears at ``out`` only whole: written beside it, then renamed over it in one step, so an
    export killed half-way leaves the previous file (or none), never a cut line; run again, it writes it all."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    with partial.open("w", encoding="utf-8", newline=newline) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, out)


def write_results(items: list[dict[str, Any]], out: Path, fmt: str) -> None:
    """DONE items as JSONL (whole, lossless) or CSV (flat: request fields, output and each metric).

    CSV text cells are quoted and made formula-safe (``spreadsheet_cell``); JSONL is written untouched.
    """
    with whole_file(out, newline="") as handle:
        if fmt == "jsonl":
            for item in items:
                handle.write(json.dumps(item, ensure_ascii=False, sort_keys=True) + "\n")
            return
        # Every text cell quoted (one cell, whatever separators or line breaks it holds); numbers are not.
        writer = csv.writer(handle, quoting=csv.QUOTE_NONNUMERIC)
        writer.writerow(["id", "task", "output", "finish_reason", "model_sha256", "created_at", *METRIC_NAMES])
        for item in items:
            item_metrics = item.get("metrics") or {}
            row = [
                item["id"],
                item.get("task"),
                item.get("output"),
                item.get("finish_reason"),
                (item.get("model") or {}).get("sha256"),
                item.get("created_at"),
                *(item_metrics.get(name) for name in METRIC_NAMES),
            ]
            writer.writerow([spreadsheet_cell(value) for value in row])


def plot_decode_speeds(items: list[dict[str, Any]], out: Path) -> None:
    """A histogram of decode tokens/s over the DONE items."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speeds = [float((item.get("metrics") or {}).get("eval_tokens_per_s", 0.0)) for item in items]
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.hist(speeds, bins=min(30, max(5, len(speeds) // 2)), color="#4472c4", edgecolor="white")
    if speeds:
        axes.axvline(
            statistics.median(speeds), color="#c00000", linestyle="--", label=f"median {statistics.median(speeds):.1f}"
        )
        axes.legend()
    axes.set_xlabel("decode tokens/s (llama.cpp eval)")
    axes.set_ylabel("results")
    axes.set_title(f"Decode speed of {len(speeds)} results")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)


def export_batch(source: Path, table: str, model: str) -> tuple[BatchFormat, Exported]:
    """The output and error records of a batch file: its lines read again, their items read by request id."""
    with source.open("rb") as handle:
        return export(build_service(table, model).stored_requests, served_model(model), jsonl_values(handle))


def write_jsonl(records: list[dict[str, Any]], out: Path) -> None:
    with whole_file(out, newline="\n") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def main_batch(args: argparse.Namespace) -> int:
    """--input: the batch file's output and error files."""
    if not args.input.is_file():
        raise SystemExit(f"error: no such file: {args.input}")
    if args.errors is None:
        raise SystemExit("error: --input needs --errors, the file for failed and invalid lines")
    fmt, exported = export_batch(args.input, args.table, args.model)
    write_jsonl(exported.output, args.out)
    write_jsonl(exported.errors, args.errors)
    counts = exported.counts()
    print(f"format: {FORMAT_NAMES[fmt]}")
    print("  ".join(f"{name.replace('_', ' ')}: {count}" for name, count in counts.items()))
    print(f"wrote {len(exported.output)} results to {args.out} and {len(exported.errors)} errors to {args.errors}")
    if exported.unfinished or exported.not_queued:
        print(
            f"{exported.unfinished + exported.not_queued} lines are in neither file: "
            "export again after the batch runs (enqueue.py queues lines that are not in the table)"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", required=True)
    parser.add_argument("--out", type=Path, required=True, help="where to write the DONE results")
    parser.add_argument("--format", choices=["jsonl", "csv"], help="default: from --out's suffix, else jsonl")
    parser.add_argument("--plot", type=Path, help="PNG of the decode speed distribution")
    parser.add_argument("--memory-mb", type=int, default=10240, help="function memory for the cost estimate")
    parser.add_argument("--architecture", choices=sorted(PRICE_PER_GB_S), default="x86_64")
    parser.add_argument("--price-per-gb-s", type=float, help="override the Lambda price per GB-second")
    parser.add_argument("--input", type=Path, help="a batch file (JSONL) to export the results of, in its format")
    parser.add_argument("--errors", type=Path, help="with --input: where to write failed and invalid lines")
    parser.add_argument(
        "--model",
        default=SERVED_MODEL,
        help="with --input: manifest name or GGUF path, as given to scripts.batch.enqueue",
    )
    args = parser.parse_args(argv)
    if args.input is not None:
        return main_batch(args)

    store = ResultStore(args.table)
    items = [item.as_json() for item in store.items.items_with_status(Status.DONE)]
    counts = {str(status): store.items.count_with_status(status) for status in Status}
    fmt = args.format or ("csv" if args.out.suffix.lower() == ".csv" else "jsonl")
    write_results(items, args.out, fmt)
    price = args.price_per_gb_s or PRICE_PER_GB_S[args.architecture]
    report = summarize(items, counts, args.memory_mb, args.architecture, price)
    if args.plot:
        plot_decode_speeds(items, args.plot)
    print(json.dumps(report, indent=2))
    print(f"wrote {len(items)} results to {args.out}" + (f" and the plot to {args.plot}" if args.plot else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
