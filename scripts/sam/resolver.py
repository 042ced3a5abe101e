"""What `sam local` makes of a template, from the SAM CLI's own resolver: each function's environment, and the routes.

Runs with the SAM CLI's Python (it lives in .venv-sam, whose pins clash with the service's):

    .venv-sam/bin/python -m scripts.sam.resolver [--template template.yaml] [--parameter-overrides K=V ...]
        [--env-vars env.json] [--routes]

Prints JSON: ``{"functions": {LogicalId: {NAME: value}}}`` with the variables each function declares, as
`sam local invoke` resolves them (parameters, `!Ref AWS::NoValue` as "", logical ids for resources,
then ``--env-vars`` overrides), and with ``--routes`` also ``"routes": [{"method", "path", "function"}]``
as `sam local start-api` mounts them. The shell's environment is left out (`sam local` lets it override
declared variables; pass ``--shell-env`` to include it).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from scripts.repository import TEMPLATE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--template", type=Path, default=TEMPLATE)
    parser.add_argument("--parameter-overrides", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--env-vars", type=Path, help="a `sam local --env-vars` JSON file")
    parser.add_argument("--routes", action="store_true", help="also list the API routes and their functions")
    parser.add_argument("--shell-env", action="store_true", help="let this process's environment override, as sam does")
    args = parser.parse_args(argv)
    args.overrides = {}
    for item in args.parameter_overrides:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--parameter-overrides wants KEY=VALUE, got {item!r}")
        args.overrides[key] = value
    return args


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    # Imported here, by name: the SAM CLI lives in its own virtualenv, not where mypy runs.
    local_lambda = importlib.import_module("samcli.commands.local.lib.local_lambda")
    function_provider = importlib.import_module("samcli.lib.providers.sam_function_provider")
    stack_provider = importlib.import_module("samcli.lib.providers.sam_stack_provider")

    stacks, _ = stack_provider.SamLocalStackProvider.get_stacks(str(args.template), parameter_overrides=args.overrides)
    provider = function_provider.SamFunctionProvider(stacks, use_raw_codeuri=True)
    env_vars = json.loads(args.env_vars.read_text(encoding="utf-8")) if args.env_vars else {}
    runner = local_lambda.LocalLambdaRunner(
        local_runtime=None,  # only the environment is asked for
        function_provider=provider,
        cwd=str(args.template.parent),
        real_path=str(args.template.parent),
        env_vars_values=env_vars,
    )
    functions: dict[str, dict[str, str]] = {}
    saved = dict(os.environ)
    try:
        for function in sorted(provider.get_all(), key=lambda f: f.name):
            declared = (function.environment or {}).get("Variables") or {}
            if not args.shell_env:
                for name in declared:
                    os.environ.pop(name, None)
            resolved = runner._make_env_vars(function).resolve()
            functions[function.name] = {name: resolved[name] for name in declared}
    finally:
        os.environ.clear()
        os.environ.update(saved)
    result: dict[str, Any] = {"functions": functions}
    if args.routes:
        api = importlib.import_module("samcli.lib.providers.api_provider").ApiProvider(stacks)
        result["routes"] = sorted(
            (
                {"method": method, "path": route.path, "function": route.function_name}
                for route in api.routes
                for method in route.methods
            ),
            key=lambda r: (r["path"], r["method"]),
        )
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if importlib.util.find_spec("samcli") is None:
        print("the SAM CLI is not importable here: run this with .venv-sam/bin/python", file=sys.stderr)
        return 2
    print(json.dumps(resolve(args), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
