"""Write the API's OpenAPI document, generated from handler/entry/api.py, to openapi.json at the repository root.

.venv/bin/python -m scripts.export_openapi         # (re)write openapi.json
.venv/bin/python -m scripts.export_openapi --check   # exit 1 if openapi.json differs from the code
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from pathlib import Path

from scripts.repository import ROOT

DOCUMENT = ROOT / "openapi.json"


def render() -> str:
    """The document as committed: keys sorted, two-space indents, a trailing newline."""
    from handler.entry.api import openapi_document

    return json.dumps(openapi_document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when openapi.json is stale")
    parser.add_argument("--out", type=Path, default=DOCUMENT, help="where the document is (default: %(default)s)")
    args = parser.parse_args(argv)
    # Importing the handler reads the Lambda settings, which a checkout lacks; that warning is noise here.
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")

    rendered = render()
    current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
    if args.check:
        if current == rendered:
            return 0
        diff = difflib.unified_diff(
            current.splitlines(keepends=True), rendered.splitlines(keepends=True), str(args.out), "generated"
        )
        sys.stderr.writelines(list(diff)[:60])
        print(f"\n{args.out} is stale: run python -m scripts.export_openapi", file=sys.stderr)
        return 1
    if current != rendered:
        args.out.write_text(rendered, encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
