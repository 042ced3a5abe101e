"""The llama.cpp build chosen at cold start (handler/engine/builds.py) is the one llama_cpp loads, in a fresh
interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from handler.engine import builds as llama_builds
from scripts.repository import ROOT
from tests.support.cpu_flags import AVX2


def test_the_chosen_build_is_the_one_llama_cpp_loads(tmp_path: Path) -> None:
    """A copy of the installed libraries as an extra build: after the choice, llama_cpp maps its files."""
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    assert spec is not None
    assert spec.origin is not None
    packaged = Path(spec.origin).parent / "lib"
    extra = tmp_path / "builds" / "copy"
    extra.mkdir(parents=True)
    for library in packaged.iterdir():
        (extra / library.name).write_bytes(library.read_bytes())
    host = llama_builds.host_cpu_flags() or frozenset()
    needs = sorted(host & AVX2)  # runnable here by construction
    (extra / llama_builds.BUILD_INFO).write_text(json.dumps({"name": "copy", "cpu_flags": needs}), encoding="utf-8")
    code = (
        "import sys; from pathlib import Path; from handler.engine import builds as llama_builds\n"
        "choice = llama_builds.select_build(Path(sys.argv[1]))\n"
        "import llama_cpp\n"
        "again = llama_builds.select_build(Path(sys.argv[1]))  # reading the vocabulary, then loading the model\n"
        "maps = open('/proc/self/maps').read()\n"
        "extra = sys.argv[1] + '/copy/libllama.so' in maps\n"
        "packaged = 'site-packages/llama_cpp/lib/libllama' in maps\n"
        "print(choice.build, again.build, extra, packaged)\n"
    )
    environment = {key: value for key, value in os.environ.items() if key != llama_builds.LIB_PATH_VARIABLE}
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "builds")],
        cwd=ROOT, env=environment, capture_output=True, text=True, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["copy", "copy", "True", "False"]
