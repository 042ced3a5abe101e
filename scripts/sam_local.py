"""The local SAM loop: the image that `sam build` makes, run by `sam local` against a local DynamoDB and SQS.

    python scripts/sam_local.py build  [--api-auth IAM|API_KEY] [--base-image NAME] [--ca-bundle PEM]
    python scripts/sam_local.py db     [--port 4510]     # moto in the foreground, for your own sam local calls
    python scripts/sam_local.py invoke [EVENT.json ...]  # each event through sam local invoke, then the first again
    python scripts/sam_local.py api                      # sam local start-api and a request to every route

``build`` writes ``.aws-sam/local/template.yaml``, template.yaml as `sam local` should see it (below), and
runs ``sam build --use-buildkit`` on it, so ``.aws-sam/build/template.yaml``, which `sam local` reads by
default, names the images it built. What differs from template.yaml:

- the resources of the other ``ApiAuth`` mode are left out: `sam local` ignores ``Condition`` and would
  otherwise serve every route from whichever API function comes last;
- every image function's ``DockerBuildArgs`` take the model (``MODEL``, and ``MODEL_FILE`` under
  models/local/ for an offline build) and, where AWS's base image cannot be pulled, ``BASE_IMAGE``;
- a CA bundle (``--ca-bundle``) goes to the build as the BuildKit secret ``ca-bundle``.

``db`` starts moto in server mode where the function containers reach it (the Docker bridge's gateway
address), creates the results table from template.yaml and a work queue, and writes
``.aws-sam/local/env.json`` for ``sam local invoke|start-api --env-vars``. ``invoke`` and ``api`` start
their own moto for the duration of the run and check the answers.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Each step lives in its module (what they share: sam_loop.py); this one is the command line, and names
# the loop's API for the image tests.
from sam_api import API_ROUTES, api, entry_point, free_port, http, request_body, start_api
from sam_aws import DEFAULT_DB_PORT, LocalAws, db, local_aws
from sam_build import DEFAULT_MODEL, STAND_IN_BASE, build, built_images, summary_of_build
from sam_invoke import SEED_EVENTS, Invocation, check_answer, generate_event, invoke, sam_invoke
from sam_loop import BUILD_LOG, BUILT_TEMPLATE, LoopError, docker_answers, image_exists, image_size_mb
from sam_template import local_template, write_local_template

__all__ = [
    "API_ROUTES",
    "BUILD_LOG",
    "BUILT_TEMPLATE",
    "STAND_IN_BASE",
    "Invocation",
    "LocalAws",
    "LoopError",
    "built_images",
    "check_answer",
    "docker_answers",
    "entry_point",
    "free_port",
    "generate_event",
    "http",
    "image_exists",
    "image_size_mb",
    "local_aws",
    "local_template",
    "main",
    "request_body",
    "sam_invoke",
    "start_api",
    "summary_of_build",
    "write_local_template",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="the local template, then sam build --use-buildkit")
    build_parser.add_argument("--api-auth", choices=["IAM", "API_KEY"], default="IAM", help="the API mode to serve")
    build_parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"manifest under layers/models/ (default {DEFAULT_MODEL})"
    )
    build_parser.add_argument(
        "--base-image",
        default="aws",
        help=f"'aws' (AWS's image, the Dockerfile's default), 'stand-in' ({STAND_IN_BASE}), or an image name",
    )
    build_parser.add_argument(
        "--ca-bundle",
        type=Path,
        default=Path(os.environ["CA_BUNDLE"]) if os.environ.get("CA_BUNDLE") else None,
        help="PEM file of extra CAs for the build's pip and dnf (default $CA_BUNDLE; none when unset)",
    )
    build_parser.add_argument("--quiet", action="store_true", help="keep the build log in the log file only")
    build_parser.set_defaults(run=build)
    invoke_parser = commands.add_parser(
        "invoke", help="sam local invoke GenerateFunction on events, then the first again"
    )
    invoke_parser.add_argument("events", nargs="*", help=f"event files (default: {' '.join(SEED_EVENTS)})")
    invoke_parser.set_defaults(run=invoke)
    api_parser = commands.add_parser("api", help="sam local start-api and requests to every route")
    api_parser.set_defaults(run=api)
    db_parser = commands.add_parser(
        "db", help="a local DynamoDB and SQS (moto) in the foreground, for your own sam local calls"
    )
    db_parser.add_argument("--port", type=int, default=DEFAULT_DB_PORT, help=f"port (default {DEFAULT_DB_PORT})")
    db_parser.set_defaults(run=db)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result: int = args.run(args)
        return result
    except LoopError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
