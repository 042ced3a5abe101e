"""Engines, builds and model files side by side (``--engines``): prompt and decode speed by one loop, and greedy texts.

Every cell of the table is one (engine, build, model file) measured by the same loop (engine_apis.py): the seed
prompt's tokens in one batch, then greedy decoding one token per step, then the prompt again from an empty cache (a
second prompt sample). Each runs in a child process of its own, every cell once per repetition, the repetitions in
alternating order; speeds are medians and every ratio is taken within a repetition, against the shipped engine on
the same build and file. The cells:

- engines: the shipped llama.cpp (llama-cpp-python's) and ik_llama.cpp (scripts/builds/ik_llama.py builds it with the
  same flags files), the fork also with its run-time repacking (``rtr``);
- builds: the shipped AVX2 flags and, where the CPU has AVX-512, the AVX-512 flags;
- model files: the bench model (Q4_K_M) and variants requantized from it by llama.cpp's quantizer (every tensor
  Q4_0; every tensor IQ4_NL), so the types' speeds are measured with the engine that would ship them.

The bench model lacks ``phi3.attention.sliding_window``, which ik_llama.cpp requires of a phi3 file and the published
Phi-3-mini-4k file has (2047): every file here gets that key (a copy of the header, the tensors unchanged), for both
engines. Then greedy agreement: the real test model's answers to the seed events, 64 tokens from each engine, token
by token. Writes engines.json.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from scripts.bench.builds import prepare_compare_build
from scripts.bench.configs import SEED_N_CTX
from scripts.bench.engine_apis import EngineApi, IkApi, MainlineApi
from scripts.bench.report import aligned_lines
from scripts.bench.runner import cpu_flags, machine_info, spawn
from scripts.eval.answers import common_prefix
from scripts.repository import ROOT, SMALL_REAL_MODEL_FILE

#: The value the published Phi-3-mini-4k-instruct GGUF carries, which ik_llama.cpp requires.
PHI3_SLIDING_WINDOW = 2047
#: Requantized variants of the bench model: name -> llama_ftype name (every tensor of that type: ``pure``).
VARIANTS = {"Q4_0": "Q4_0", "IQ4_NL": "IQ4_NL"}
ENGINES = ("llama.cpp", "ik_llama.cpp", "ik_llama.cpp rtr")
#: The files the fork runs: the default type and the one its repacked kernels favour; mainline runs every file.
IK_FILES = ("Q4_K_M", "Q4_0")
GREEDY_TOKENS = 64
SEED_EVENTS = ("summarize.json", "translate.json", "chat-solve.json")


# --- the child's side ---------------------------------------------------------------------------------------------


def engine_of(spec: dict[str, Any]) -> EngineApi:
    """The engine a spec names: the shipped one (its build chosen by LLAMA_CPP_LIB_PATH), or the fork's build."""
    if spec["engine"] == "llama.cpp":
        return MainlineApi()
    return IkApi(Path(spec["ik_build"]), Path(spec["ik_binding"]), repack=spec["engine"].endswith("rtr"))


def evaluate(api: EngineApi, tokens: list[int]) -> np.ndarray:
    """The prompt in batches of at most 512 tokens; the last token's logits."""
    logits = np.empty(0, dtype=np.float32)
    for start in range(0, len(tokens), 512):
        logits = api.decode(tokens[start : start + 512], start)
    return logits


def greedy(api: EngineApi, tokens: list[int], max_tokens: int) -> tuple[list[int], float, float]:
    """The prompt, then ``max_tokens`` greedy tokens (never stopping early); the ids and both phases' seconds."""
    started = time.perf_counter()
    logits = evaluate(api, tokens)
    prompt_s = time.perf_counter() - started
    generated: list[int] = []
    started = time.perf_counter()
    while True:
        generated.append(int(np.argmax(logits)))
        if len(generated) == max_tokens:
            break
        logits = api.decode(generated[-1:], len(tokens) + len(generated) - 1)
    return generated, prompt_s, time.perf_counter() - started


def child_side_by_side(spec: dict[str, Any]) -> dict[str, Any]:
    """One cell: load, prompt + greedy decode, the prompt again; or (``prompts``) greedy answers only."""
    api = engine_of(spec)
    started = time.perf_counter()
    api.load(Path(spec["model"]), SEED_N_CTX, spec["threads"], spec["type_k"])
    load_s = time.perf_counter() - started
    result: dict[str, Any] = {"engine": api.name, "system_info": api.system_info(), "load_s": round(load_s, 2)}
    if "prompts" in spec:
        answers = []
        for tokens in spec["prompts"]:
            api.clear()
            answers.append(greedy(api, tokens, spec["max_tokens"])[0])
        return {**result, "answers": answers}
    tokens = spec["tokens"]
    generated, prompt_s, decode_s = greedy(api, tokens, spec["max_tokens"])
    api.clear()
    started = time.perf_counter()
    evaluate(api, tokens)
    repeat_s = time.perf_counter() - started
    # Decode speed counts the steps taken: the first token comes from the prompt's logits.
    steps = len(generated) - 1
    return {
        **result,
        "prompt_tokens": len(tokens),
        "prompt_tokens_per_s": round(len(tokens) / prompt_s, 3),
        "repeat_prompt_tokens_per_s": round(len(tokens) / repeat_s, 3),
        "decode_tokens": len(generated),
        "decode_tokens_per_s": round(steps / decode_s, 3),
        "generated": generated,
    }


# --- the parent's side --------------------------------------------------------------------------------------------


def with_sliding_window(source: Path, target: Path) -> Path:
    """A copy of a phi3 GGUF with ``phi3.attention.sliding_window`` added (header rewritten, tensors copied)."""
    import gguf

    if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    reader = gguf.GGUFReader(source)
    arch = str(bytes(reader.fields["general.architecture"].parts[-1]), "utf-8")
    partial = target.with_name(target.name + ".partial")
    writer = gguf.GGUFWriter(partial, arch=arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        value_type = field.types[0]
        if value_type == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(field.name, field.contents(), value_type, sub_type=field.types[-1])
        else:
            writer.add_key_value(field.name, field.contents(), value_type)
    writer.add_uint32(f"{arch}.attention.sliding_window", PHI3_SLIDING_WINDOW)
    for tensor in reader.tensors:
        writer.add_tensor_info(
            tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data)
    writer.close()
    partial.replace(target)
    return target


def requantized(source: Path, target: Path, file_type: str) -> Path:
    """``source`` requantized by llama.cpp's quantizer, every tensor ``file_type`` (output and embeddings too)."""
    from scripts.models.quantizer import quantize

    if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    partial = target.with_name(target.name + ".partial")
    quantize(source, partial, file_type, requantize=True, pure=True)
    partial.replace(target)
    return target


def prepare_files(model: Path) -> dict[str, Path]:
    """The bench model and its variants, each with the sliding-window key, beside the model (made once)."""
    folder = model.parent / "variants"
    folder.mkdir(exist_ok=True)
    files = {"Q4_K_M": with_sliding_window(model, folder / f"{model.stem}-swa.gguf")}
    for name, file_type in VARIANTS.items():
        plain = requantized(model, folder / f"{model.stem}-{name.lower()}-plain.gguf", file_type)
        files[name] = with_sliding_window(plain, folder / f"{model.stem}-{name.lower()}.gguf")
        plain.unlink()
    return files


def prepare_builds(with_fork: bool = True) -> dict[str, dict[str, Any]]:
    """Per build label: the shipped engine's library folder (None: the package's) and the fork's build folder."""
    from scripts.builds import ik_llama
    from scripts.builds.llama import BUILD_DIR, default_flags_file

    builds: dict[str, dict[str, Any]] = {"avx2": {"mainline_lib": None, "flags": default_flags_file()}}
    compare = prepare_compare_build(platform.machine().lower() in ("x86_64", "amd64"))
    if compare.get("lib_dir"):
        builds["avx512"] = {"mainline_lib": compare["lib_dir"], "flags": BUILD_DIR / "cmake-amd64-avx512.args"}
    else:
        print(f"AVX-512 build not measured: {compare.get('skipped')}")
    for entry in builds.values():
        entry["ik_build"] = str(ik_llama.build(entry["flags"])) if with_fork else None
    return builds


def cells(builds: dict[str, dict[str, Any]], files: dict[str, Path]) -> list[dict[str, Any]]:
    """Every (engine, build, file) to measure, in a fixed order."""
    from scripts.builds.ik_llama import binding_root

    binding = str(binding_root())
    chosen = []
    for build, entry in builds.items():
        for file_name, path in files.items():
            for engine in ENGINES:
                if engine != "llama.cpp" and file_name not in IK_FILES:
                    continue
                if engine.endswith("rtr") and file_name != "Q4_K_M":
                    continue
                chosen.append(
                    {
                        "engine": engine,
                        "build": build,
                        "file": file_name,
                        "model": str(path),
                        "lib_path": entry["mainline_lib"] if engine == "llama.cpp" else None,
                        "ik_build": entry["ik_build"],
                        "ik_binding": binding,
                    }
                )
    return chosen


def cell_name(cell: dict[str, Any]) -> str:
    return f"{cell['engine'].replace(' ', '-').replace('.', '')}-{cell['build']}-{cell['file']}"


def measure(
    chosen: list[dict[str, Any]],
    tokens: list[int],
    threads: int,
    type_k: str,
    repeats: int,
    max_tokens: int,
    work: Path,
) -> list[dict[str, Any]]:
    """Every cell once per repetition, in a child each; odd repetitions in reverse order, so none always runs first."""
    runs: list[dict[str, Any]] = []
    print(f"{len(chosen)} cells x {repeats} repetition(s), {len(tokens)} prompt tokens, {max_tokens} decoded:")
    for repeat in range(repeats):
        order = chosen if repeat % 2 == 0 else chosen[::-1]
        for cell in order:
            spec = {**cell, "config": "side-by-side", "tokens": tokens, "threads": threads, "type_k": type_k}
            spec["max_tokens"] = max_tokens
            run = spawn(spec, work, f"{cell_name(cell)}-{repeat}")
            runs.append({**run, **{key: cell[key] for key in ("engine", "build", "file")}, "repeat": repeat})
    return runs


def table_lines(table: list[dict[str, Any]]) -> list[str]:
    """The cells' medians and ratios, aligned."""
    return aligned_lines(
        ["engine", "build", "file", "prompt tok/s", "x base", "decode tok/s", "x base", "load s"],
        [
            [
                row["engine"],
                row["build"],
                row["file"],
                f"{row['prompt_tokens_per_s']:.2f}",
                f"{row['prompt_ratio']:.2f}",
                f"{row['decode_tokens_per_s']:.2f}",
                f"{row['decode_ratio']:.2f}",
                f"{row['load_s']:.1f}",
            ]
            for row in table
        ],
        text_columns=3,
    )


def run_side_by_side(
    model: Path, tokens: list[int], threads: int, type_k: str, repeats: int, max_tokens: int, out_dir: Path, work: Path
) -> int:
    """Measure every cell ``repeats`` times, then the greedy answers; print the table and write engines.json."""
    started = time.perf_counter()
    builds = prepare_builds()
    files = prepare_files(model)
    chosen = cells(builds, files)
    runs = measure(chosen, tokens, threads, type_k, repeats, max_tokens, work)
    table = summarize(runs, chosen, "Q4_K_M")
    agreement = greedy_agreement(builds, threads, work, model.parent / "variants")
    print()
    for line in table_lines(table):
        print(line)
    print("x base: median over repetitions of the cell's speed over llama.cpp's on the same build and Q4_K_M file")
    for line in agreement["lines"]:
        print(line)
    settings = {"threads": threads, "type_k": type_k, "repeats": repeats, "max_tokens": max_tokens}
    fields = {
        "cpu_has_avx512": "avx512f" in cpu_flags(),
        "builds": {name: {key: str(value) for key, value in entry.items()} for name, entry in builds.items()},
        "table": table,
        "greedy_agreement": agreement,
    }
    path, report = write_run(out_dir / "engines.json", started, settings, tokens, files, runs, fields)
    print(f"wrote {path}; wall time {report['wall_s']:.0f} s (building the engines and files included)")
    return 0


def write_run(
    path: Path,
    started: float,
    settings: dict[str, Any],
    tokens: list[int],
    files: dict[str, Path],
    runs: list[dict[str, Any]],
    fields: dict[str, Any],
) -> tuple[Path, dict[str, Any]]:
    """A run's JSON: its settings, the machine, the files measured, ``fields``, every run, the wall time."""
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": settings,
        "prompt_tokens": len(tokens),
        "machine": machine_info(),
        "files": {name: {"path": str(file), "bytes": file.stat().st_size} for name, file in files.items()},
        **fields,
        "runs": runs,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    path.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return path, report


def summarize(runs: list[dict[str, Any]], chosen: list[dict[str, Any]], base_file: str) -> list[dict[str, Any]]:
    """Per cell: median speeds, and the median within-repetition ratio to the shipped engine's cell of ``base_file``
    on the same build."""

    def find(engine: str, build: str, file: str, repeat: int) -> dict[str, Any] | None:
        return next(
            (
                run
                for run in runs
                if (run["engine"], run["build"], run["file"], run["repeat"]) == (engine, build, file, repeat)
            ),
            None,
        )

    table = []
    for cell in chosen:
        mine = [
            run
            for run in runs
            if (run["engine"], run["build"], run["file"]) == tuple(cell[k] for k in ("engine", "build", "file"))
        ]
        prompts = [value for run in mine for value in (run["prompt_tokens_per_s"], run["repeat_prompt_tokens_per_s"])]
        prompt_ratios, decode_ratios = [], []
        for run in mine:
            base = find("llama.cpp", cell["build"], base_file, run["repeat"])
            if base:
                base_prompt = (base["prompt_tokens_per_s"] + base["repeat_prompt_tokens_per_s"]) / 2
                prompt_ratios.append((run["prompt_tokens_per_s"] + run["repeat_prompt_tokens_per_s"]) / 2 / base_prompt)
                decode_ratios.append(run["decode_tokens_per_s"] / base["decode_tokens_per_s"])
        table.append(
            {
                **{key: cell[key] for key in ("engine", "build", "file")},
                "prompt_tokens_per_s": round(statistics.median(prompts), 2),
                "decode_tokens_per_s": round(statistics.median(run["decode_tokens_per_s"] for run in mine), 2),
                "prompt_ratio": round(statistics.median(prompt_ratios), 3) if prompt_ratios else float("nan"),
                "decode_ratio": round(statistics.median(decode_ratios), 3) if decode_ratios else float("nan"),
                "load_s": round(statistics.median(run["load_s"] for run in mine), 2),
                "samples": len(mine),
            }
        )
    return table


def seed_prompts() -> list[list[int]]:
    """The seed events' prompts as the service builds them for the real test model (its chat template)."""
    from handler.core.settings import settings_from
    from handler.domain.requests import parse_request
    from handler.engine.loading import load_tokenizer
    from handler.usecases.preparation import checked_prompt

    tokenizer = load_tokenizer(settings_from({**os.environ, "MODEL_PATH": str(SMALL_REAL_MODEL_FILE)}))
    prompts = []
    for name in SEED_EVENTS:
        event = json.loads((ROOT / "events" / name).read_text(encoding="utf-8"))
        prompts.append(list(checked_prompt(tokenizer, parse_request(event)).tokens))
    return prompts


def real_model_files(folder: Path) -> dict[str, Path]:
    """The real model as shipped (Q4_1) and requantized to Q8_0: the fork computes Q4_1 differently (see
    docs/performance.md), so its agreement is also measured on a type both engines handle alike."""
    folder.mkdir(parents=True, exist_ok=True)
    q8 = requantized(SMALL_REAL_MODEL_FILE, folder / f"{SMALL_REAL_MODEL_FILE.stem}-q8_0.gguf", "Q8_0")
    return {"Q4_1 (as shipped)": SMALL_REAL_MODEL_FILE, "Q8_0 (requantized)": q8}


def greedy_agreement(builds: dict[str, dict[str, Any]], threads: int, work: Path, folder: Path) -> dict[str, Any]:
    """Each engine's greedy answers to the seed events on the real model, compared token by token with the shipped's."""
    from scripts.builds.ik_llama import binding_root

    prompts = seed_prompts()
    binding = str(binding_root())
    results: dict[str, Any] = {"model": str(SMALL_REAL_MODEL_FILE.relative_to(ROOT)), "events": list(SEED_EVENTS)}
    lines = []
    for file_label, model in real_model_files(folder).items():
        for build, entry in builds.items():
            answers = {}
            for engine in ("llama.cpp", "ik_llama.cpp"):
                spec = {
                    "config": "side-by-side",
                    "engine": engine,
                    "model": str(model),
                    "prompts": prompts,
                    "threads": threads,
                    "type_k": "f16",
                    "max_tokens": GREEDY_TOKENS,
                    "lib_path": entry["mainline_lib"] if engine == "llama.cpp" else None,
                    "ik_build": entry["ik_build"],
                    "ik_binding": binding,
                }
                name = f"greedy-{engine.replace('.', '')}-{build}-{file_label.split()[0]}"
                answers[engine] = spawn(spec, work, name)["answers"]
            common = [common_prefix(x, y) for x, y in zip(answers["llama.cpp"], answers["ik_llama.cpp"], strict=True)]
            identical = sum(length == GREEDY_TOKENS for length in common)
            results[f"{file_label}, {build}"] = {
                "answers": answers,
                "common_prefix_tokens": common,
                "identical": identical,
            }
            lines.append(
                f"greedy agreement ({SMALL_REAL_MODEL_FILE.stem} {file_label}, {build} builds, {GREEDY_TOKENS} tokens "
                f"per seed event): {identical}/{len(prompts)} identical; tokens in common before the first difference: "
                f"{common}"
            )
    results["lines"] = lines
    return results
