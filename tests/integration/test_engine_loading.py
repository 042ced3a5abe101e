"""Loading the engine (handler/engine/__init__.py): what it reports of the model, and clear errors for a missing
file or one that is not a GGUF.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from handler.core.errors import ModelLoadError
from handler.core.settings import settings_from
from handler.engine import Engine, load_engine


def test_engine_info_names_model_quantization_and_context(engine: Engine, tiny_model: Path) -> None:
    assert engine.info.file == tiny_model.name
    assert engine.info.context_length == 4096
    assert engine.info.quantization
    assert len(engine.info.sha256) == 64


def test_load_engine_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "absent.gguf"

    with pytest.raises(ModelLoadError, match=r"absent\.gguf"):
        load_engine(settings_from({"MODEL_PATH": str(missing)}))


def test_load_engine_not_a_gguf_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"\0" * 1024)

    with pytest.raises(ModelLoadError, match=r"could not load bogus\.gguf"):
        load_engine(settings_from({"MODEL_PATH": str(bogus)}))
