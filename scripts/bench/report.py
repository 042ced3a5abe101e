"""The benchmark's report: medians, paired ratios, the table and the decode-versus-batch plot."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from scripts.bench.configs import BATCH_SIZES, COMPARED, compared_config, per_s
from scripts.bench.model import kv_bytes_per_position


def median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(float(run[key]) for run in runs))


def speeds(run: dict[str, Any]) -> dict[str, float]:
    """One run's prompt and decode speeds."""
    return {
        # Both prompt evaluations of the run: the request's and the repeat from an empty cache.
        "prompt_tokens_per_s": per_s(
            run["prompt_eval_tokens"] + run.get("repeat_prompt_eval_tokens", 0),
            run["prompt_ms"] + run.get("repeat_prompt_ms", 0.0),
        ),
        # llama.cpp's own eval timing: decode steps over time inside llama_decode.
        "decode_tokens_per_s": per_s(run["eval_runs"], run["eval_ms"]),
        # End to end: the same steps over the whole generation after the prompt (sampling, Python).
        "e2e_decode_tokens_per_s": per_s(run["eval_runs"], run["total_ms"] - run["prompt_ms"]),
    }


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over repetitions of one configuration on one input, with derived speeds."""
    rows = [{**run, **speeds(run)} for run in runs]
    keys = ("prompt_tokens_per_s", "decode_tokens_per_s", "e2e_decode_tokens_per_s", "load_s", "peak_rss_mb")
    summary: dict[str, Any] = {key: round(median(rows, key), 3) for key in keys}
    for key in ("prompt_tokens", "decode_tokens", "threads", "threads_batch", "type_k"):
        summary[key] = rows[0][key]
    summary["build"] = runs_build(rows)
    summary["repeats"] = len(rows)
    return summary


def runs_build(runs: list[dict[str, Any]]) -> str:
    """The build label of these runs (one, unless something went wrong: then all of them, joined)."""
    return "/".join(sorted({run.get("build", "-") for run in runs}))


def paired_ratios(runs: list[dict[str, Any]], name: str, numerator: str, denominator: str, key: str) -> list[float]:
    """One configuration's speed over another's in each repetition that ran both (on input ``name``)."""
    by_run = {run["run"]: run for run in runs}
    ratios = []
    for run in runs:
        if run["config"] != denominator or run["input"] != name:
            continue
        repeat = run["run"].rsplit("-", 1)[1]
        partner = by_run.get(f"{numerator}-{name}-{repeat}")
        if partner is not None and speeds(run)[key] > 0:
            ratios.append(speeds(partner)[key] / speeds(run)[key])
    return ratios


def paired_ratio(runs: list[dict[str, Any]], name: str, numerator: str, denominator: str, key: str) -> float | None:
    """Median over repetitions of one configuration's speed over another's in the same repetition.

    On a shared virtual machine the speed drifts over tens of seconds (runs a minute apart differ by
    up to 15% here) while runs of one repetition, seconds apart, drift together: a ratio within
    each repetition cancels most of the drift that a ratio of separate medians keeps.
    """
    ratios = paired_ratios(runs, name, numerator, denominator, key)
    return round(statistics.median(ratios), 3) if ratios else None


def tabulate(
    runs: list[dict[str, Any]],
    inputs: dict[str, dict[str, Any]],
    layout: dict[str, Any],
    threads: int,
    max_tokens: int,
    type_k: str,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Table rows, per-configuration medians and the batched series from the children's raw numbers."""
    bandwidth = next(run for run in runs if run["config"] == "d")
    bandwidth_gbs = float(bandwidth["gb_per_s_by_threads"][str(threads)])
    rows: list[dict[str, Any]] = []
    summary: dict[str, dict[str, Any]] = {}
    for name, data in inputs.items():
        labels = [("a", "a seed defaults"), ("b", "b engine"), ("c", "c raw llama_decode")]
        for config in [config for config, _ in labels] + [compared_config(config) for config in COMPARED]:
            selected = [run for run in runs if run["config"] == config and run["input"] == name]
            if selected:  # the compared builds' configurations only when the build comparison ran
                summary[f"{config}-{name}"] = summarize_runs(selected)
        for config, label in labels:
            rows.append({"name": label, "input": name, **summary[f"{config}-{name}"]})
            if f"{compared_config(config)}-{name}" in summary:
                rows.append({"name": COMPARED[config], "input": name, **summary[f"{compared_config(config)}-{name}"]})
        mean_context = len(data["tokens"]) + max_tokens / 2
        bytes_per_token = layout["weight_bytes_per_token"] + kv_bytes_per_position(layout, type_k) * mean_context
        roofline = round(bandwidth_gbs * 1e9 / bytes_per_token, 3)
        summary[f"d-{name}"] = {
            "read_gb_per_s": bandwidth_gbs,
            "bytes_per_token": int(bytes_per_token),
            "mean_context": mean_context,
            "type_k": type_k,
            "decode_tokens_per_s": roofline,
        }
        rows.append(
            {
                "name": "d roofline",
                "input": name,
                "build": "-",
                "threads": threads,
                "type_k": type_k,
                "decode_tokens_per_s": roofline,
            }
        )
    batched_runs = [run for run in runs if run["config"] == "e"]
    batched: list[dict[str, Any]] = []
    for k in BATCH_SIZES:
        entries = [entry for run in batched_runs for entry in run["by_k"] if entry["k"] == k]
        aggregate = round(statistics.median(entry["aggregate_tokens_per_s"] for entry in entries), 3)
        batched.append({"k": k, "aggregate_tokens_per_s": aggregate, "per_seq_tokens_per_s": round(aggregate / k, 3)})
        rows.append(
            {
                "name": f"e batched K={k}",
                "input": "summarize",
                "build": runs_build(batched_runs),
                "threads": threads,
                "type_k": batched_runs[0]["type_k"],
                "prompt_tokens": batched_runs[0]["prompt_tokens"],
                "prompt_tokens_per_s": per_s(batched_runs[0]["prompt_eval_tokens"], batched_runs[0]["prompt_ms"])
                if k == 1
                else None,
                "decode_tokens": f"{k}x{max_tokens}",
                # Wall clock over the decode loop, sampling included: end to end as well.
                "decode_tokens_per_s": aggregate,
                "e2e_decode_tokens_per_s": aggregate,
                "per_seq_tokens_per_s": round(aggregate / k, 3),
                "load_s": round(statistics.median(run["load_s"] for run in batched_runs), 3) if k == 1 else None,
                "peak_rss_mb": max(entry["peak_rss_mb_after"] for entry in entries),
            }
        )
    summary["e-summarize"] = {"by_k": batched}
    return rows, summary, batched


def ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if denominator else None


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def print_table(rows: list[dict[str, Any]]) -> None:
    """One aligned table of every configuration."""
    columns = [
        ("configuration", "name"),
        ("input", "input"),
        ("build", "build"),
        ("threads", "threads"),
        ("K cache", "type_k"),
        ("prompt tok", "prompt_tokens"),
        ("prompt tok/s", "prompt_tokens_per_s"),
        ("decode tok", "decode_tokens"),
        ("decode tok/s", "decode_tokens_per_s"),
        ("e2e tok/s", "e2e_decode_tokens_per_s"),
        ("per seq tok/s", "per_seq_tokens_per_s"),
        ("load s", "load_s"),
        ("peak RSS MB", "peak_rss_mb"),
    ]
    print_aligned([title for title, _ in columns], [[cell(row.get(key)) for _, key in columns] for row in rows], 3)


def aligned_lines(header: list[str], lines: list[list[str]], text_columns: int) -> list[str]:
    """A header, a rule and the lines; the first ``text_columns`` columns left-aligned, numbers right-aligned."""
    cells = [header, *lines]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    text = []
    for index, line in enumerate(cells):
        text.append(
            "  ".join(
                cell.ljust(width) if i < text_columns else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(line, widths, strict=True))
            )
        )
        if index == 0:
            text.append("  ".join("-" * width for width in widths))
    return text


def print_aligned(header: list[str], lines: list[list[str]], text_columns: int) -> None:
    """aligned_lines, printed."""
    for line in aligned_lines(header, lines, text_columns):
        print(line)


def plot(
    batched: list[dict[str, Any]], ceiling: float | None, single: float | None, path: Path, title: str
) -> str | None:
    """Aggregate and per-sequence tok/s against K; returns an error text instead of raising when it cannot plot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (it is in requirements-dev.txt): no plot written"
    ks = [entry["k"] for entry in batched]
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    axes.plot(ks, [entry["aggregate_tokens_per_s"] for entry in batched], "o-", label="aggregate (all sequences)")
    axes.plot(ks, [entry["per_seq_tokens_per_s"] for entry in batched], "s--", label="per sequence")
    if single:
        axes.axhline(single, color="grey", linestyle=":", label=f"(c) raw llama_decode, 1 sequence: {single:.1f}")
    if ceiling:
        axes.axhline(ceiling, color="red", linestyle="-.", label=f"(d) roofline, 1 sequence: {ceiling:.1f}")
    axes.set_xscale("log", base=2)
    axes.set_xticks(ks, [str(k) for k in ks])
    axes.set_xlabel("sequences per decode step (K)")
    axes.set_ylabel("decode tokens/s")
    axes.set_ylim(bottom=0)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return None
