"""The tiny model's greedy texts as JSON: the part of the arm64 check that runs on this machine and inside the image.

    python arm64_greedy.py --model tiny-phi3.gguf [--setting NAME=VALUE ...]

Run by path with the task root (or the repository root) on PYTHONPATH: it imports the standard library and the
handler only, since the image holds nothing else. arm64_check.py compares the two sides' output.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

#: The line of the output that holds its JSON (the handler's logger writes to standard output too).
RESULT_MARK = "arm64-check-result: "
GREEDY_PROMPTS = (
    "Summarize: the quick brown fox jumps over the lazy dog.",
    "Translate into Japanese: Good morning, how are you?",
    "Solve 3x - y = 3 and 2x + y = -9.",
)
GREEDY_MAX_TOKENS = 64


def greedy_texts(model: Path, environ: dict[str, str]) -> dict[str, Any]:
    """The engine's greedy texts for GREEDY_PROMPTS, with and without the end-of-generation stop."""
    from handler.core.settings import settings_from
    from handler.domain.requests import GenerationOptions
    from handler.engine import load_engine
    from handler.formats.prompts import Message

    engine = load_engine(settings_from({"MODEL_PATH": str(model), "N_THREADS": "2", **environ}))
    import llama_cpp

    options = GenerationOptions(max_tokens=GREEDY_MAX_TOKENS, temperature=0.0, stop=[], store=False)
    results: list[dict[str, Any]] = []
    for prompt in GREEDY_PROMPTS:
        for ignore_eos in (False, True):
            pieces: list[str] = []
            completion = engine.generate(
                engine.build_prompt([Message("user", prompt)]), options, ignore_eos=ignore_eos, sink=pieces.append
            )
            results.append(
                {
                    "prompt": prompt,
                    "ignore_eos": ignore_eos,
                    "text": completion.text,
                    "pieces": pieces,
                    "completion_tokens": completion.completion_tokens,
                    "finish_reason": completion.finish_reason,
                }
            )
    return {
        "machine": os.uname().machine,
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "settings": environ,
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE", help="an engine setting")
    args = parser.parse_args(argv)
    environ = dict(setting.split("=", 1) for setting in args.setting)
    print(RESULT_MARK + json.dumps(greedy_texts(args.model, environ), ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
