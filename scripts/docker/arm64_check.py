"""The linux/arm64 image built and run on an x86_64 machine, under emulation (qemu-user-static + BuildKit).

    python -m scripts.docker.arm64_check build    # the arm64 stand-in base (when missing), then the function image
    python -m scripts.docker.arm64_check check    # what the image must do (below), on the image of the last build
    python -m scripts.docker.arm64_check all      # both: `make image-arm64`

The image comes from the same Dockerfile as the x86_64 one, with the small real model baked in offline
(models/local/, as `make sam-build` does) on the local stand-in base built for linux/arm64
(image/base/build.sh with STAND_IN_PLATFORM=linux/arm64). `check` asks of it:

- llama.cpp's system-info line says ``DOTPROD = 1`` (the Armv8.2-A dot product of
  layers/build/cmake-arm64.args) and no SVE or int8 matrix multiply (Graviton2 has neither);
- the three seed events, sent to the image's own entry point (its Runtime Interface Emulator, no
  table), are answered DONE with text;
- the tiny test model's greedy texts equal those of this machine's x86_64 build, prompt by prompt,
  through the engine (load_engine, build_prompt, generate), with prompt-lookup drafting off and at
  its default (``SPEC_DRAFT_MAX``; a build without the setting ignores it).

Emulated speed says nothing about Graviton's: the only time this prints is the build's wall time.
The results go to .aws-sam/arm64/ (build.log, build.json, check.json). arm64_greedy.py is the part that runs
inside the image too (standard library and the handler only).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from scripts.docker import arm64_greedy
from scripts.repository import ROOT, SMALL_REAL_MODEL

OUT_DIR = ROOT / ".aws-sam" / "arm64"
BUILD_LOG = OUT_DIR / "build.log"
PLATFORM = "linux/arm64"
IMAGE = "llm-service/function:arm64"
STAND_IN_ARM64 = "llm-service/lambda-python-stand-in:bookworm-arm64"
TINY_MODEL = ROOT / "models" / "test" / "tiny-phi3.gguf"
REAL_MODEL_TARGET = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
SEED_EVENTS = ("events/summarize.json", "events/translate.json", "events/chat-solve.json")
#: The engine's settings of the two greedy comparisons: drafting off, then the defaults.
GREEDY_SETTINGS: tuple[dict[str, str], ...] = ({"SPEC_DRAFT_MAX": "0"}, {})
#: Instruction sets of llama.cpp's system info a Graviton2 build must not have.
NOT_ON_GRAVITON2 = ("SVE", "MATMUL_INT8", "SME")


class CheckError(RuntimeError):
    """A step failed; the message says which and why."""


def log(message: str) -> None:
    print(f"[arm64] {message}", file=sys.stderr, flush=True)


def require_emulation() -> None:
    """On a machine of another architecture, arm64 programs run through qemu-user-static's binfmt handler."""
    if os.uname().machine in ("aarch64", "arm64"):
        return
    handler = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    state = handler.read_text(encoding="utf-8").splitlines()[:1] if handler.is_file() else []
    if state != ["enabled"]:
        raise CheckError(
            f"{handler} is not an enabled binfmt handler, so arm64 programs cannot run here: "
            "apt-get install qemu-user-static (Debian registers it), or register it with update-binfmts"
        )


# --- greedy texts: compared ----------------------------------------------------------------------------------


def result_of(output: str) -> dict[str, Any]:
    """The JSON that `greedy` printed, among whatever else went to its standard output."""
    for line in reversed(output.splitlines()):
        if line.startswith(arm64_greedy.RESULT_MARK):
            found: dict[str, Any] = json.loads(line[len(arm64_greedy.RESULT_MARK) :])
            return found
    raise CheckError(f"no result line in the greedy run's output: {output.strip()[-1000:]}")


def compare_greedy(x86: dict[str, Any], arm: dict[str, Any]) -> list[str]:
    """Where the two sides' greedy generations differ (nothing: equal, piece for piece)."""
    problems = []
    if len(x86["results"]) != len(arm["results"]):
        return [f"{len(x86['results'])} generations on x86_64, {len(arm['results'])} on arm64"]
    for left, right in zip(x86["results"], arm["results"], strict=True):
        what = f"{left['prompt']!r} (ignore_eos={left['ignore_eos']})"
        for field in ("text", "pieces", "completion_tokens", "finish_reason"):
            if left[field] != right[field]:
                problems.append(f"{what}: {field} differs: x86_64 {left[field]!r}, arm64 {right[field]!r}")
    return problems


# --- build ---------------------------------------------------------------------------------------------------


def build(args: argparse.Namespace) -> dict[str, Any]:
    from scripts.sam.build import model_file_for, summary_of_build
    from scripts.sam.loop import LoopError, image_exists, require_docker

    try:
        require_docker()
    except LoopError as exc:
        raise CheckError(str(exc)) from exc
    require_emulation()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    build_args = {"MODEL": SMALL_REAL_MODEL}
    base = args.base_image
    if base == "stand-in":
        base = STAND_IN_ARM64
        log(f"base image: {base} (image/base/build.sh, STAND_IN_PLATFORM={PLATFORM})")
        env = {**os.environ, "STAND_IN_PLATFORM": PLATFORM, "STAND_IN_IMAGE": base, "CA_BUNDLE": args.ca_bundle}
        subprocess.run(["bash", str(ROOT / "image" / "base" / "build.sh")], env=env, check=True, stdout=sys.stderr)
        # The stand-in exists for one platform under its name, so the model stage (data only, on the build
        # machine's platform with AWS's multi-platform base) runs on it too: emulated, it copies and hashes.
        build_args["BUILDPLATFORM"] = PLATFORM
    if base != "aws":
        if not image_exists(base):
            raise CheckError(f"the base image {base} is not here")
        build_args["BASE_IMAGE"] = base
    base_seconds = time.monotonic() - started
    model_file = model_file_for(SMALL_REAL_MODEL)
    if model_file is None:
        raise CheckError(f"no models/ copy of {SMALL_REAL_MODEL}: run `make {REAL_MODEL_TARGET}` first")
    build_args["MODEL_FILE"] = model_file
    command = ["docker", "buildx", "build", "--platform", PLATFORM, "--progress=plain", "--tag", args.image]
    for name, value in build_args.items():
        command += ["--build-arg", f"{name}={value}"]
    if args.ca_bundle:
        command += ["--secret", f"id=ca-bundle,src={Path(args.ca_bundle).resolve()}"]
    command.append(str(ROOT))
    log("$ " + " ".join(command))
    from scripts.sam.loop import run_logged

    returncode, image_seconds = run_logged(command, BUILD_LOG, args.quiet)
    if returncode != 0:
        raise CheckError(
            f"docker buildx build failed (exit {returncode}) after {image_seconds:.0f} s; log: {BUILD_LOG}"
        )
    summary = summary_of_build(BUILD_LOG.read_text(encoding="utf-8"))
    record = {
        "image": args.image,
        "platform": PLATFORM,
        "command": command,
        "base_seconds": round(base_seconds),
        "image_seconds": round(image_seconds),
        "summary": summary,
    }
    (OUT_DIR / "build.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    log(f"built {args.image} in {image_seconds:.0f} s (wall; the base before it: {base_seconds:.0f} s)")
    print(summary)
    return record


# --- check ---------------------------------------------------------------------------------------------------


def in_image(image: str, *arguments: str, mounts: tuple[tuple[Path, str], ...] = (), timeout: float = 900) -> str:
    """Run the image's Python (emulated) with the task root on its path; its standard output."""
    command = ["docker", "run", "--rm", "--platform", PLATFORM, "--entrypoint", "python"]
    command += ["--env", "PYTHONPATH=/var/task"]
    for source, target in mounts:
        command += ["--volume", f"{source.resolve()}:{target}:ro"]
    out = subprocess.run([*command, image, *arguments], capture_output=True, text=True, timeout=timeout, check=False)
    if out.returncode != 0:
        raise CheckError(f"python in {image} failed (exit {out.returncode}): {out.stderr.strip()[-2000:]}")
    return out.stdout


def features_of(system_info: str) -> set[str]:
    """The instruction sets llama.cpp's system info reports as compiled in ("DOTPROD = 1 | ...")."""
    return {name for name, value in re.findall(r"([A-Z0-9_]+) = (\d+)", system_info) if value != "0"}


def check_system_info(image: str) -> str:
    code = "import llama_cpp; print(llama_cpp.llama_print_system_info().decode().strip())"
    info = in_image(image, "-c", code).strip()
    log(f"llama.cpp system info: {info}")
    features = features_of(info)
    if "DOTPROD" not in features:
        raise CheckError(f"no DOTPROD = 1 in llama.cpp's system info: {info}")
    if features & set(NOT_ON_GRAVITON2):
        raise CheckError(f"the build has {sorted(features & set(NOT_ON_GRAVITON2))}, which Graviton2 lacks: {info}")
    return info


def check_events(image: str) -> list[dict[str, Any]]:
    """The seed events through the image's entry point (its Runtime Interface Emulator), without a table."""
    from scripts.sam.api import entry_point
    from scripts.sam.loop import LoopError

    results: list[dict[str, Any]] = []
    env = {"AWS_LAMBDA_FUNCTION_TIMEOUT": "900"}
    with entry_point(image, env, platform=PLATFORM, prefix="llm-service-arm64") as container:
        try:
            for event in SEED_EVENTS:
                body = (ROOT / event).read_text(encoding="utf-8")
                try:
                    answer = container.invoke(body, 120, 2, timeout=900)
                except LoopError as exc:
                    raise CheckError(str(exc)) from None
                reply = answer.body if isinstance(answer.body, dict) else {"raw": answer.body}
                output = str(reply.get("output") or "")
                result: dict[str, Any] = {
                    "event": event,
                    "status": reply.get("status"),
                    "output": output,
                    "answer": reply,
                }
                results.append(result)
                log(f"{event}: {reply.get('status')} {output[:100]!r}")
        finally:
            (OUT_DIR / "events.log").write_text(container.logs(), encoding="utf-8")
    failed = [r["event"] for r in results if r["status"] != "DONE" or not r["output"].strip()]
    if failed:
        raise CheckError(f"not answered DONE with text: {failed}; the answers are in {OUT_DIR / 'check.json'}")
    return results


def check_greedy(image: str, model: Path) -> list[dict[str, Any]]:
    """The tiny model's greedy texts on this machine's build and in the arm64 image, compared."""
    if not model.is_file():
        raise CheckError(f"{model} is missing: run `make {TINY_MODEL.relative_to(ROOT)}`")
    script = Path(arm64_greedy.__file__).resolve()
    comparisons = []
    for environ in GREEDY_SETTINGS:
        arguments = ["--model"]
        settings = [f"--setting={name}={value}" for name, value in environ.items()]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        host = subprocess.run(
            [sys.executable, str(script), *arguments, str(model), *settings],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if host.returncode != 0:
            raise CheckError(f"the greedy run on this machine failed: {host.stderr.strip()[-2000:]}")
        x86 = result_of(host.stdout)
        mounts = ((script, "/opt/check/arm64_greedy.py"), (model, "/opt/check/model.gguf"))
        arm = result_of(
            in_image(image, "/opt/check/arm64_greedy.py", *arguments, "/opt/check/model.gguf", *settings, mounts=mounts)
        )
        problems = compare_greedy(x86, arm)
        label = " ".join(f"{k}={v}" for k, v in environ.items()) or "default settings"
        compared = sum(r["completion_tokens"] for r in x86["results"])
        log(
            f"tiny model, {label}: {len(x86['results'])} generations, {compared} tokens: "
            + ("equal on x86_64 and arm64" if not problems else f"{len(problems)} differences")
        )
        comparisons.append({"settings": environ, "x86_64": x86, "arm64": arm, "differences": problems})
    differing = [c for c in comparisons if c["differences"]]
    if differing:
        raise CheckError("greedy texts differ: " + "; ".join(p for c in differing for p in c["differences"])[:3000])
    return comparisons


def check(args: argparse.Namespace) -> dict[str, Any]:
    from scripts.sam.loop import image_exists

    require_emulation()
    if not image_exists(args.image):
        raise CheckError(f"no image {args.image}: build it first (python -m scripts.docker.arm64_check build)")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"image": args.image}
    try:
        record["system_info"] = check_system_info(args.image)
        record["events"] = check_events(args.image)
        record["greedy"] = check_greedy(args.image, args.tiny_model)
    finally:
        (OUT_DIR / "check.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log(f"all checks passed; details in {OUT_DIR.relative_to(ROOT) / 'check.json'}")
    return record


# --- command line --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("build", "check", "all"):
        sub = commands.add_parser(name)
        sub.add_argument("--image", default=IMAGE, help=f"the arm64 function image's tag (default {IMAGE})")
        if name != "check":
            sub.add_argument(
                "--base-image",
                default="stand-in",
                help="stand-in (default: the local stand-in for linux/arm64), aws (AWS's image), or an image name",
            )
            sub.add_argument("--ca-bundle", default="", help="extra CAs for pip and dnf inside the builds (PEM)")
            sub.add_argument("--quiet", action="store_true", help="the build log only to .aws-sam/arm64/build.log")
        if name != "build":
            sub.add_argument("--tiny-model", type=Path, default=TINY_MODEL, help="the tiny test model (GGUF)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command in ("build", "all"):
            build(args)
        if args.command in ("check", "all"):
            check(args)
    except (CheckError, subprocess.CalledProcessError) as exc:
        log(f"ERROR: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
