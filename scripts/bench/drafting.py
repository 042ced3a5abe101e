"""Prompt-lookup drafting measured, in one run: how often drafts are right on real text, what checking them costs
on the Phi-3-shaped model, and the decode speedup for Phi-3 that follows from both.

- Acceptance, with the real instruct model (SmolLM2-135M-Instruct, whose text is real): summaries and
  translations of the seed's LightGBM abstract and of a Moby-Dick passage, and the seed's chat question, each
  greedy without drafting and with each ``SPEC_DRAFT_MAX`` in ``DRAFT_MAXES``, in rotating order: accepted over
  drafted tokens, tokens per ``llama_decode`` step, and decode tokens/s with and without (measured, on that
  model's scale: a 135M model's step is mostly fixed overhead, so it gains more than a 3.8B one would).
- Cost, on the Phi-3-shaped Q4_K_M bench model: one ``llama_decode`` of the next token plus k drafted tokens,
  logits at each, for k = 0..``COST_K_MAX``, after a prompt of each of ``COST_CONTEXTS`` tokens (a summary's).
- Projection for Phi-3: each drafted run's own steps (how many tokens each drafted, how many it kept) priced at
  the Phi-3-shaped model's cost of those steps, against one step per token. It assumes Phi-3 would accept its
  drafts as often as SmolLM2 does (both copy the input they are given): a projection, not a measurement.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from scripts.bench.configs import quiet_llama_logs
from scripts.bench.report import cell, print_aligned, ratio
from scripts.bench.run_setup import RunSetup, write_report
from scripts.bench.runner import machine_info, spawn
from scripts.repository import ROOT, SMALL_REAL_MODEL_FILE

DRAFT_MAXES = (1, 3, 7, 15)
COST_K_MAX = 16
COST_CONTEXTS = (512, 1024)
MAX_TOKENS = 256
REPEATS = 3
QUICK_REPEATS = 1
REAL_MODEL = SMALL_REAL_MODEL_FILE
MOBY_DICK = ROOT / "tests" / "data" / "moby-dick-chapters-1-9.txt"


def tasks() -> dict[str, dict[str, Any]]:
    """The requests measured, by name: the seed's three events and two over a Moby-Dick passage."""
    events = {name: json.loads((ROOT / "events" / f"{name}.json").read_text()) for name in ("summarize", "translate")}
    chat = json.loads((ROOT / "events" / "chat-solve.json").read_text())
    passage = MOBY_DICK.read_text(encoding="utf-8")[2000:5000]
    # Every request generates up to MAX_TOKENS: the events' own limits differ.
    return {
        "summarize LightGBM": {**events["summarize"], "options": {"max_tokens": MAX_TOKENS}},
        "translate LightGBM": {**events["translate"], "options": {"max_tokens": MAX_TOKENS}},
        "summarize Moby-Dick": {"task": "summarize", "text": passage, "style": "bullets"},
        "translate Moby-Dick": {"task": "translate", "text": passage[:1200], "target_language": "French"},
        "chat (seed question)": {**chat, "options": {"max_tokens": MAX_TOKENS}},
    }


def child_acceptance(spec: dict[str, Any]) -> dict[str, Any]:
    """Each task greedy with drafting off and at each maximum, ``repeats`` times in rotating order."""
    from handler.core.settings import settings_from
    from handler.domain.requests import GenerationOptions, parse_request
    from handler.engine import load_engine
    from handler.formats.prompts import build_messages

    engine = load_engine(settings_from({"MODEL_PATH": spec["model"], "N_THREADS": str(spec["threads"])}))
    options = GenerationOptions(max_tokens=MAX_TOKENS)
    maxima = [0, *spec["draft_maxes"]]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name, raw in spec["tasks"].items():
        prompt = engine.build_prompt(build_messages(parse_request(raw)))
        runs[name] = {str(d): [] for d in maxima}
        for repeat in range(spec["repeats"]):
            shift = repeat % len(maxima)
            for draft_max in maxima[shift:] + maxima[:shift]:
                engine.clear_cache()
                done = engine.generate(prompt, options, draft_max=draft_max)
                runs[name][str(draft_max)].append(
                    {
                        "prompt_tokens": done.prompt_tokens,
                        "completion_tokens": done.completion_tokens,
                        "eval_runs": done.eval_runs,
                        "eval_ms": done.eval_ms,
                        "drafted": done.drafted_tokens,
                        "accepted": done.accepted_tokens,
                        "draft_steps": done.draft_steps,
                        "text": done.text,
                    }
                )
    return {"runs": runs, "threads": engine.n_threads, "model_file": Path(spec["model"]).name}


def child_cost(spec: dict[str, Any]) -> dict[str, Any]:
    """Milliseconds of one llama_decode of 1 + k tokens with logits at each, after each context length."""
    import llama_cpp

    from scripts.bench.measurements import eval_prompt, raw_context

    quiet_llama_logs()
    longest = max(spec["contexts"])
    _, ctx, load_s = raw_context(spec, longest + spec["k_max"] + 64, 1)
    memory = llama_cpp.llama_get_memory(ctx)
    batch = llama_cpp.llama_batch_init(spec["k_max"] + 1, 0, 1)
    tokens: list[int] = spec["tokens"]
    costs: dict[str, dict[str, float]] = {}
    for context in spec["contexts"]:
        llama_cpp.llama_memory_clear(memory, True)
        eval_prompt(ctx, tokens[:context])
        follow = tokens[context : context + spec["k_max"] + 1]
        samples: dict[int, list[float]] = {k: [] for k in range(spec["k_max"] + 1)}
        for repeat in range(spec["repeats"] + 1):  # the first pass warms up and is not kept
            order = list(range(spec["k_max"] + 1))
            for k in order[repeat % len(order) :] + order[: repeat % len(order)]:
                for i in range(k + 1):
                    batch.token[i] = follow[i]
                    batch.pos[i] = context + i
                    batch.n_seq_id[i] = 1
                    batch.seq_id[i][0] = 0
                    batch.logits[i] = 1
                batch.n_tokens = k + 1
                started = time.perf_counter()
                if llama_cpp.llama_decode(ctx, batch) != 0:
                    raise RuntimeError(f"llama_decode failed checking {k} drafted tokens")
                llama_cpp.llama_synchronize(ctx)
                elapsed = (time.perf_counter() - started) * 1000.0
                llama_cpp.llama_memory_seq_rm(memory, 0, context, -1)
                if repeat:
                    samples[k].append(elapsed)
        costs[str(context)] = {str(k): round(statistics.median(values), 2) for k, values in samples.items()}
    return {"costs_ms": costs, "load_s": load_s, "threads": spec["threads"]}


def _nearest(costs: dict[str, dict[str, float]], length: float) -> dict[int, float]:
    context = min(costs, key=lambda c: abs(int(c) - length))
    return {int(k): ms for k, ms in costs[context].items()}


def projected_ms(run: dict[str, Any], cost: dict[int, float]) -> tuple[float, float]:
    """This run's decode time on Phi-3's shapes one step per token, and with its own drafting steps."""
    tokens = run["eval_runs"] + run["accepted"]
    plain_steps = run["eval_runs"] - len(run["draft_steps"])
    drafted_ms = plain_steps * cost[0] + sum(cost[min(k, max(cost))] for k, _ in run["draft_steps"])
    return tokens * cost[0], drafted_ms


def summarize(acceptance: dict[str, Any], cost: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per task and maximum: acceptance, tokens per step, measured and projected speed."""
    rows = []
    for name, by_max in acceptance["runs"].items():
        plain = by_max["0"]
        plain_speed = statistics.median(r["eval_runs"] / r["eval_ms"] * 1000.0 for r in plain)
        for draft_max, runs in by_max.items():
            drafted = sum(r["drafted"] for r in runs)
            accepted = sum(r["accepted"] for r in runs)
            steps = sum(r["eval_runs"] for r in runs)
            speed = statistics.median((r["eval_runs"] + r["accepted"]) / r["eval_ms"] * 1000.0 for r in runs)
            length = runs[0]["prompt_tokens"] + runs[0]["completion_tokens"] / 2
            plain_ms, drafted_ms = projected_ms(runs[0], _nearest(cost["costs_ms"], length))
            rows.append(
                {
                    "task": name,
                    "draft_max": int(draft_max),
                    "prompt_tokens": runs[0]["prompt_tokens"],
                    "completion_tokens": runs[0]["completion_tokens"],
                    "same_text_as_plain": runs[0]["text"] == plain[0]["text"],
                    "drafted": drafted,
                    "accepted": accepted,
                    "acceptance": ratio(accepted, drafted) if drafted else None,
                    "tokens_per_step": ratio(steps + accepted, steps),
                    "decode_tokens_per_s": round(speed, 2),
                    "measured_speedup": ratio(speed, plain_speed),
                    "phi3_plain_ms": round(plain_ms, 1),
                    "phi3_drafted_ms": round(drafted_ms, 1),
                    "phi3_projected_speedup": ratio(plain_ms, drafted_ms),
                }
            )
    return rows


def by_task(rows: list[dict[str, Any]]) -> dict[str, dict[int, float | None]]:
    """The Phi-3 projection per task and maximum over all its texts: their times summed, then the ratio."""
    sums: dict[str, dict[int, list[float]]] = {}
    for row in rows:
        task = row["task"].split()[0]
        entry = sums.setdefault(task, {}).setdefault(row["draft_max"], [0.0, 0.0])
        entry[0] += row["phi3_plain_ms"]
        entry[1] += row["phi3_drafted_ms"]
    return {task: {d: ratio(plain, drafted) for d, (plain, drafted) in by.items()} for task, by in sums.items()}


def run_drafting(base: dict[str, Any], bench_tokens: list[int], work: Path, quick: bool) -> dict[str, Any]:
    """The acceptance child (real model) and the cost child (bench model), then the table's rows."""
    if not REAL_MODEL.is_file():
        raise SystemExit(f"error: the real model is missing: {REAL_MODEL} (make {REAL_MODEL.relative_to(ROOT)})")
    repeats = QUICK_REPEATS if quick else REPEATS
    acceptance = spawn(
        {
            "config": "draft-acceptance",
            "model": str(REAL_MODEL),
            "threads": base["threads"],
            "tasks": tasks(),
            "draft_maxes": list(DRAFT_MAXES),
            "repeats": repeats,
        },
        work,
        "draft-acceptance",
    )
    contexts = [c for c in COST_CONTEXTS if c + COST_K_MAX + 1 <= len(bench_tokens)]
    if not contexts:
        raise SystemExit(f"error: the bench input has {len(bench_tokens)} tokens, fewer than {min(COST_CONTEXTS)}")
    cost = spawn(
        {
            **base,
            "config": "draft-cost",
            "tokens": bench_tokens,
            "contexts": contexts,
            "k_max": COST_K_MAX,
            "repeats": repeats,
        },
        work,
        "draft-cost",
    )
    rows = summarize(acceptance, cost)
    return {"rows": rows, "phi3_projected_by_task": by_task(rows), "acceptance": acceptance, "cost": cost}


def print_drafting(result: dict[str, Any]) -> None:
    costs = result["cost"]["costs_ms"]
    print("cost of one llama_decode checking k drafted tokens (Phi-3-shaped Q4_K_M, ms; k = 0 is a plain step):")
    ks = sorted(int(k) for k in next(iter(costs.values())))
    print_aligned(
        ["context", *(f"k={k}" for k in ks)],
        [[context, *(cell(costs[context][str(k)]) for k in ks)] for context in costs],
        1,
    )
    header = ["task", "max", "accepted/drafted", "tokens/step", "decode tok/s", "measured x", "Phi-3 projected x"]
    lines = [
        [
            row["task"],
            str(row["draft_max"] or "off"),
            f"{row['accepted']}/{row['drafted']} ({cell(row['acceptance'])})" if row["drafted"] else "-",
            cell(row["tokens_per_step"]),
            cell(row["decode_tokens_per_s"]),
            cell(row["measured_speedup"]),
            cell(row["phi3_projected_speedup"]),
        ]
        for row in result["rows"]
    ]
    print_aligned(header, lines, 1)
    for task, by in result["phi3_projected_by_task"].items():
        print(
            f"Phi-3 projected, {task} (all its texts): "
            + ", ".join(f"max {d or 'off'} {cell(value)}x" for d, value in by.items() if d)
        )
    print(
        f"acceptance and decode tok/s: {result['acceptance']['model_file']} (real text), greedy, measured in this "
        "run; Phi-3 projected: those runs' steps priced at the costs above, one step per token against them"
    )


def run_drafting_benchmark(setup: RunSetup, quick: bool) -> int:
    """Drafting measured on the long input, printed and written to drafting.json."""
    print(f"prompt-lookup drafting (threads {setup.threads}, K cache {setup.type_k}):")
    drafting = run_drafting({**setup.base, "threads": setup.threads}, setup.inputs["long"]["tokens"], setup.work, quick)
    print()
    print_drafting(drafting)
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {"quick": quick, "threads": setup.threads, "type_k": setup.type_k},
        "machine": machine_info(),
        "model": {**setup.model, **setup.layout},
        **drafting,
    }
    path = write_report(setup, "drafting.json", report)
    print(f"wrote {path}; drafting wall time {report['wall_s']:.0f} s")
    return 0
