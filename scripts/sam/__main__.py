"""The local SAM loop: the image that `sam build` makes, run by `sam local` against a local DynamoDB and SQS.

    python -m scripts.sam build  [--api-auth IAM|API_KEY] [--base-image NAME] [--ca-bundle PEM]
    python -m scripts.sam db     [--port 4510]     # moto in the foreground, for your own sam local calls
    python -m scripts.sam invoke [EVENT.json ...]  # each event through sam local invoke, then the first again
    python -m scripts.sam api                      # sam local start-api and a request to every route

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

from scripts.repository import SMALL_REAL_MODEL

# Each step lives in its module (what they share: loop.py); this one is the command line.
from scripts.sam.api import api
from scripts.sam.aws import DEFAULT_DB_PORT, db
from scripts.sam.build import STAND_IN_BASE, build
from scripts.sam.invoke import SEED_EVENTS, invoke
from scripts.sam.loop import LoopError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.sam", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="the local template, then sam build --use-buildkit")
    build_parser.add_argument("--api-auth", choices=["IAM", "API_KEY"], default="IAM", help="the API mode to serve")
    build_parser.add_argument(
        "--model", default=SMALL_REAL_MODEL, help=f"manifest under layers/models/ (default {SMALL_REAL_MODEL})"
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
