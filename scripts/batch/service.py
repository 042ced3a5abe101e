"""What the batch scripts share: building the service for a table outside Lambda."""

from __future__ import annotations

import json
from pathlib import Path

from handler.core.settings import settings_from
from handler.formats.openai_chat import model_id
from handler.usecases.text_service import TextService, service_from_settings
from scripts.repository import MANIFEST_DIR


def model_sha256(model: str) -> str:
    """The sha256 that identifies the served model: a manifest name under layers/models, or a GGUF's sidecar/hash."""
    manifest = MANIFEST_DIR / f"{model}.json"
    if manifest.is_file():
        pinned = json.loads(manifest.read_text(encoding="utf-8")).get("sha256")
        if not pinned:
            raise SystemExit(f"error: manifest {manifest.name} pins no sha256; pass the model file instead")
        return str(pinned)
    path = Path(model)
    if not path.is_file():
        raise SystemExit(f"error: {model!r} is neither a manifest under layers/models nor a model file")
    from handler.engine import model_identity

    return model_identity(path.resolve()).sha256


def served_model(model: str) -> str:
    """The model id the API serves (GET /v1/models) for a manifest name under layers/models, or a GGUF file:
    the model file's name without ``.gguf``, as the deployed function names its file."""
    manifest = MANIFEST_DIR / f"{model}.json"
    if manifest.is_file():
        filename = json.loads(manifest.read_text(encoding="utf-8")).get("filename")
        if not filename:
            raise SystemExit(f"error: manifest {manifest.name} names no filename")
        return model_id(str(filename))
    path = Path(model)
    if not path.is_file():
        raise SystemExit(f"error: {model!r} is neither a manifest under layers/models nor a model file")
    return model_id(path.resolve().name)


def build_service(table: str, model: str, queue_url: str | None = None) -> TextService:
    """A service writing to ``table`` whose request ids match the deployed model's."""
    # Given the model file, requests are also counted in tokens before they are queued
    # (handler/usecases/queued_work.py).
    model_path = Path(model).resolve() if Path(model).is_file() else Path("/opt/model/model.gguf")
    environ = {"MODEL_PATH": str(model_path), "MODEL_SHA256": model_sha256(model), "TABLE_NAME": table}
    if queue_url:
        environ["WORK_QUEUE_URL"] = queue_url
    return service_from_settings(settings_from(environ))
