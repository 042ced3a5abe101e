"""The local loop's build step: the local template, then `sam build --use-buildkit`, and what the images hold.

The model goes into the build (offline from models/local/ when a copy is there) and, where AWS's
base image cannot be pulled, the base image is the local stand-in or one given.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from scripts.local.cfn_template import load_template
from scripts.repository import MANIFEST_DIR, ROOT, TEMPLATE
from scripts.sam.loop import (
    BUILD_LOG,
    BUILT_TEMPLATE,
    LoopError,
    image_exists,
    image_size_mb,
    log,
    require_docker,
    run_logged,
    sam_command,
    sam_environment,
)
from scripts.sam.template import local_template, write_local_template

STAND_IN_BASE = "llm-service/lambda-python-stand-in:bookworm"


def choose_base(requested: str) -> tuple[str | None, str]:
    """(BASE_IMAGE build arg, or None for the Dockerfile's default; a sentence saying which base is used)."""
    if requested in ("", "aws"):
        return None, "base image: AWS's Lambda Python image (the Dockerfile's default, pulled from its registry)"
    if requested == "stand-in":
        requested = STAND_IN_BASE
    if requested == STAND_IN_BASE and not image_exists(requested):
        raise LoopError(f"the stand-in base {requested} is not built: run `make sam-base` (image/base/build.sh)")
    origin = "the local stand-in, image/base/" if requested == STAND_IN_BASE else "given"
    return requested, f"base image: {requested} ({origin})"


def model_file_for(model: str) -> str | None:
    """The model's GGUF under models/local/ (hard-linked from models/ when it is there), else None."""
    manifest = json.loads((MANIFEST_DIR / f"{model}.json").read_text(encoding="utf-8"))
    filename = str(manifest["filename"])
    local = ROOT / "models" / "local" / filename
    if not local.is_file():
        source = ROOT / "models" / filename
        if not source.is_file():
            return None
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, local)
        except OSError:
            shutil.copy2(source, local)
    return f"models/local/{filename}"


def build(args: argparse.Namespace) -> int:
    require_docker()
    base, which = choose_base(args.base_image)
    log(which)
    build_args = {"MODEL": args.model}
    model_file = model_file_for(args.model)
    if model_file:
        build_args["MODEL_FILE"] = model_file
        log(f"model: {args.model}, offline from {model_file}")
    else:
        log(f"model: {args.model}, downloaded by the build (no models/ copy)")
    if base:
        build_args["BASE_IMAGE"] = base
    template = local_template(
        load_template(TEMPLATE),
        {"ApiAuth": args.api_auth},
        build_args,
        args.ca_bundle.resolve() if args.ca_bundle else None,
    )
    path = write_local_template(template)
    log(f"template for sam local: {path.relative_to(ROOT)} (ApiAuth={args.api_auth})")
    command = [
        *sam_command(),
        "build",
        "--template-file",
        str(path),
        "--base-dir",
        str(ROOT),
        "--config-file",
        str(ROOT / "samconfig.toml"),
        "--use-buildkit",
    ]
    log("$ " + " ".join(command))
    returncode, elapsed = run_logged(command, BUILD_LOG, args.quiet, env=sam_environment())
    if returncode != 0:
        raise LoopError(f"sam build failed (exit {returncode}) after {elapsed:.0f} s; log: {BUILD_LOG}")
    log(f"sam build: {elapsed:.0f} s; log: {BUILD_LOG.relative_to(ROOT)}")
    images = built_images()
    print(summary_of_build(BUILD_LOG.read_text(encoding="utf-8"), images.get("GenerateFunction")))
    for name, image in images.items():
        print(f"image {name}: {image} {image_size_mb(image):.0f} MB")
    return 0


_LOG_BASE = re.compile(r"^#\d+ [\d.]+ base image: (\S+)\s*$")
_LOG_CPU = re.compile(r"^#\d+ [\d.]+ (CPU : .*\S)\s*$")


def summary_of_build(build_log: str, image: str | None = None) -> str:
    """The base image and llama.cpp's system-info line, as the build log printed them.

    A build whose steps all came from the cache prints neither: then the image itself is asked.
    """
    lines = build_log.splitlines()
    bases = sorted({m.group(1) for m in map(_LOG_BASE.match, lines) if m})
    infos = [m.group(1) for m in map(_LOG_CPU.match, lines) if m]
    base = ", ".join(bases)
    info = infos[-1] if infos else ""
    if image and not base:
        base = image_label(image, "org.opencontainers.image.base.name") + " (image label; the build was cached)"
    if image and not info:
        info = image_system_info(image) + " (asked the image; the build was cached)"
    return f"base image: {base or '(not in the build log)'}\nllama.cpp system info: {info or '(not in the build log)'}"


def image_label(image: str, label: str) -> str:
    out = subprocess.run(
        ["docker", "image", "inspect", "--format", f'{{{{ index .Config.Labels "{label}" }}}}', image],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip()


def image_system_info(image: str) -> str:
    """llama.cpp's system-info line, from the image's own Python and task root."""
    code = "import llama_cpp; print(llama_cpp.llama_print_system_info().decode().strip())"
    out = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "python", "--env", "PYTHONPATH=/var/task", image, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    return out.stdout.strip() or f"(the image could not say: {out.stderr.strip()[-300:]})"


def built_images(template: Path = BUILT_TEMPLATE) -> dict[str, str]:
    """Function logical id -> image tag, from the built template."""
    if not template.is_file():
        raise LoopError(f"{template.relative_to(ROOT)} is missing: run `make sam-build` first")
    document = load_template(template)
    return {
        name: str(res["Properties"]["ImageUri"])
        for name, res in (document.get("Resources") or {}).items()
        if isinstance(res, dict)
        and res.get("Type") == "AWS::Serverless::Function"
        and "ImageUri" in res.get("Properties", {})
    }
