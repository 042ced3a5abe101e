"""openapi.json is generated from the code and committed: it must be current and describe every answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from handler.entry.api import openapi_document
from scripts import export_openapi
from scripts.repository import ROOT

ERROR_REF = {"$ref": "#/components/schemas/ErrorAnswer"}
ANSWER_REF = {"$ref": "#/components/schemas/Answer"}


@pytest.fixture
def quiet_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "ERROR")  # what main() would set for the whole process


def test_openapi_committed_document_is_current(quiet_logs: None) -> None:
    committed = (ROOT / "openapi.json").read_text(encoding="utf-8")

    assert committed == export_openapi.render(), "openapi.json is stale: run python -m scripts.export_openapi"
    assert export_openapi.main(["--check"]) == 0


def test_openapi_check_fails_on_a_stale_copy(
    tmp_path: Path, quiet_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "openapi.json"
    document = json.loads(export_openapi.render())
    document["info"]["version"] = "0.0.0"
    stale.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    assert export_openapi.main(["--check", "--out", str(stale)]) == 1
    assert "stale" in capsys.readouterr().err
    assert export_openapi.main(["--out", str(stale)]) == 0
    assert export_openapi.main(["--check", "--out", str(stale)]) == 0


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(method.upper(), path): op for path, item in document["paths"].items() for method, op in item.items()}


def test_openapi_declares_every_route_and_its_answers() -> None:
    operations = _operations(openapi_document())

    submit = {"200", "202", "400", "405", "413", "415", "422", "429", "503"}
    assert {key: set(op["responses"]) for key, op in operations.items()} == {
        ("POST", "/summarize"): submit,
        ("POST", "/translate"): submit,
        ("POST", "/chat"): submit,
        ("GET", "/results/{id}"): {"200", "404", "405", "422", "429", "503"},
        ("POST", "/v1/chat/completions"): {"200", "202", "400", "404", "405", "413", "415", "429", "503"},
        ("GET", "/v1/chat/completions/{completion_id}"): {"200", "202", "400", "404", "405", "429", "503"},
        ("GET", "/v1/models"): {"200", "405"},
        ("GET", "/v1/models/{model}"): {"200", "400", "404", "405"},
        ("POST", "/v1/files"): {"200", "400", "401", "405", "413", "415", "503"},
        ("GET", "/v1/files"): {"200", "400", "401", "405", "503"},
        ("GET", "/v1/files/{file_id}"): {"200", "400", "401", "404", "405", "503"},
        ("DELETE", "/v1/files/{file_id}"): {"200", "400", "401", "404", "405", "503"},
        ("GET", "/v1/files/{file_id}/content"): {"200", "400", "401", "404", "405", "503"},
        ("POST", "/v1/batches"): {"200", "400", "401", "404", "405", "413", "415", "429", "503"},
        ("GET", "/v1/batches"): {"200", "400", "401", "405", "503"},
        ("GET", "/v1/batches/{batch_id}"): {"200", "400", "401", "404", "405", "503"},
        ("POST", "/v1/batches/{batch_id}/cancel"): {"200", "400", "401", "404", "405", "409", "503"},
    }
    for (_, path), op in operations.items():
        if path.startswith("/v1/"):
            continue  # OpenAI's shapes: test_openapi_openai_routes_answer_in_openai_shapes
        for status, response in op["responses"].items():
            schema = response["content"]["application/json"]["schema"]
            assert schema == (ANSWER_REF if status in {"200", "202"} else ERROR_REF), (op["operationId"], status)
        if "202" in op["responses"]:
            assert op["responses"]["202"]["headers"]["Location"]["required"] is True
        assert op["responses"]["405"]["headers"]["Allow"]["required"] is True


def test_openapi_openai_routes_answer_in_openai_shapes() -> None:
    operations = _operations(openapi_document())
    answers = {
        "/v1/chat/completions": "ChatCompletion",
        "/v1/chat/completions/{completion_id}": "ChatCompletion",
        "/v1/models": "ModelList",
        "/v1/models/{model}": "ModelCard",
        "/v1/files": "FileObject",
        "/v1/files/{file_id}": "FileObject",
        "/v1/batches": "Batch",
        "/v1/batches/{batch_id}": "Batch",
        "/v1/batches/{batch_id}/cancel": "Batch",
    }
    listed = {("GET", "/v1/files"): "FileList", ("GET", "/v1/batches"): "BatchList"}
    deleted = {("DELETE", "/v1/files/{file_id}"): "FileDeleted"}

    for (method, path), op in operations.items():
        if not path.startswith("/v1/"):
            continue
        for status, response in op["responses"].items():
            if path == "/v1/files/{file_id}/content" and status == "200":
                assert set(response["content"]) == {"application/x-ndjson"}  # the file's bytes
                continue
            schema = response["content"]["application/json"]["schema"]
            if status == "200":
                expected = {**listed, **deleted}.get((method, path), answers[path])
                assert schema == {"$ref": f"#/components/schemas/{expected}"}, (path, status)
                continue
            expected = answers[path] if status in {"200", "202"} else "OpenAIErrorAnswer"
            assert schema == {"$ref": f"#/components/schemas/{expected}"}, (path, status)


def test_openapi_bodies_are_the_request_types_with_task_optional() -> None:
    document = openapi_document()
    schemas = document["components"]["schemas"]

    for route, name in [("summarize", "SummarizeBody"), ("translate", "TranslateBody"), ("chat", "ChatBody")]:
        body = document["paths"][f"/{route}"]["post"]["requestBody"]
        assert body["required"] is True
        assert body["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{name}"}
        assert "task" not in schemas[name].get("required", [])
        assert schemas[name]["properties"]["task"]["const"] == route
        assert schemas[name]["additionalProperties"] is False
    assert schemas["GenerationOptions"]["properties"]["max_tokens"]["maximum"] == 4096


def test_openapi_has_no_unused_schemas_and_no_swagger_route() -> None:
    document = openapi_document()
    text = json.dumps({key: value for key, value in document.items() if key != "components"})

    for name, schema in document["components"]["schemas"].items():
        reference = f'"#/components/schemas/{name}"'
        assert reference in text or reference in json.dumps(document["components"]["schemas"]), name
        assert schema
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert not [path for path in document["paths"] if "swagger" in path]


def test_openapi_names_the_security_schemes() -> None:
    document = openapi_document()

    assert document["security"] == [{"sigv4": []}, {"apiKey": []}]
    schemes = document["components"]["securitySchemes"]
    assert schemes["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    assert (schemes["apiKey"]["in"], schemes["apiKey"]["name"]) == ("header", "x-api-key")
    assert document["info"]["title"] == "llm-service"
    assert "IAM" in document["info"]["description"]
