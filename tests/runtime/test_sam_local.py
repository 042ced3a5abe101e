"""The function in the environment `sam local` gives it, from the SAM CLI's own resolver, and the local template.

`sam local` resolves ``!Ref AWS::NoValue`` to an empty string and overrides only the variables a
template declares; `sam local start-api` ignores ``Condition``. These tests need no Docker: the SAM
CLI (in .venv-sam) resolves the template, and the handler runs behind the Runtime Interface Emulator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from handler.core.errors import ConfigurationError
from handler.core.settings import Settings, available_cpus, settings_from
from scripts.local.cfn_template import load_template
from scripts.repository import ROOT, TEMPLATE
from scripts.sam.api import API_ROUTES
from scripts.sam.build import STAND_IN_BASE
from scripts.sam.loop import LoopError
from scripts.sam.template import local_template, write_local_template
from tests.support.emulator import start_emulator
from tests.support.events import load_event
from tests.support.local_aws import Table

SAM_PYTHON = ROOT / ".venv-sam" / "bin" / "python"
OPTIONAL_SETTINGS = sorted(
    str(info.alias) for info in Settings.model_fields.values() if info.alias and not info.is_required()
)
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SQS")


def sam_resolve(
    template: Path = TEMPLATE,
    overrides: dict[str, str] | None = None,
    env_vars: Path | None = None,
    routes: bool = False,
) -> dict[str, Any]:
    """What the SAM CLI resolves for ``template`` (scripts/sam/resolver.py run by the SAM CLI's Python)."""
    if not SAM_PYTHON.is_file():
        pytest.fail(f"{SAM_PYTHON} is missing: `make setup` installs the SAM CLI into .venv-sam")
    command = [str(SAM_PYTHON), "-m", "scripts.sam.resolver", "--template", str(template)]
    if overrides:
        command += ["--parameter-overrides", *(f"{key}={value}" for key, value in overrides.items())]
    if env_vars:
        command += ["--env-vars", str(env_vars)]
    if routes:
        command.append("--routes")
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    resolved: dict[str, Any] = json.loads(result.stdout)
    return resolved


# --- empty strings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("variable", OPTIONAL_SETTINGS)
def test_every_optional_setting_given_empty_is_unset(variable: str) -> None:
    # GIVEN an optional setting whose variable is set to the empty string (what `sam local` makes of
    # `!Ref AWS::NoValue`, and `VAR= command` in a shell)
    base = {"MODEL_PATH": "/m.gguf"}

    # WHEN the settings are read
    settings = settings_from({**base, variable: ""})

    # THEN it takes its default, as if the variable were not set at all
    assert settings == settings_from(base)


def test_optional_settings_cover_the_template_s_novalue_variables() -> None:
    # The variables the template may leave empty are among the optional settings tested above.
    assert {"N_THREADS", "RESULT_TTL_DAYS", "TABLE_NAME", "WORK_QUEUE_URL"} <= set(OPTIONAL_SETTINGS)


def test_required_setting_given_empty_is_reported_missing() -> None:
    with pytest.raises(ConfigurationError, match="MODEL_PATH: Field required"):
        settings_from({"MODEL_PATH": ""})


# --- the environment sam local resolves from template.yaml ---------------------------------------


def test_sam_local_environment_of_every_function_is_valid() -> None:
    # GIVEN template.yaml with its default parameters, as `sam local invoke` resolves it
    functions = sam_resolve()["functions"]

    assert {"GenerateFunction", "BatchFunction", "WorkerFunction"} <= set(functions)
    for name, environment in functions.items():
        # WHEN each function reads its settings
        settings = settings_from(environment)

        # THEN they are valid: the settings left out by !Ref AWS::NoValue take their defaults
        assert environment["N_THREADS"] == "", name
        assert settings.n_threads == available_cpus(), name
        assert settings.result_ttl_days is None, name
        # AND the endpoints are declared, empty (AWS's own) unless a local run names its stand-ins
        assert all(environment[variable] == "" for variable in ENDPOINT_VARIABLES), name


def test_sam_local_leaves_conditional_variables_empty_whatever_the_parameters() -> None:
    # sam local does not evaluate Fn::If in environment variables: it passes "" for N_THREADS even with
    # Threads=3 (--env-vars sets them locally), while a plain Ref parameter does come through.
    environment = sam_resolve(overrides={"Threads": "3", "MaxAttempts": "5"})["functions"]["GenerateFunction"]

    settings = settings_from(environment)

    assert environment["N_THREADS"] == ""
    assert (settings.n_threads, settings.max_attempts) == (available_cpus(), 5)


def test_sam_local_env_vars_point_every_function_at_the_local_table_and_queue(tmp_path: Path) -> None:
    # GIVEN the --env-vars file the local loop writes (the CloudFormation-parameter form: all functions)
    aws = {
        "TABLE_NAME": "llm-results-local",
        "WORK_QUEUE_URL": "http://172.17.0.1:4510/123456789012/llm-work-local",
        "AWS_ENDPOINT_URL_DYNAMODB": "http://172.17.0.1:4510",
        "AWS_ENDPOINT_URL_SQS": "http://172.17.0.1:4510",
        "N_THREADS": "3",
    }
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps({"Parameters": aws}), encoding="utf-8")

    # WHEN sam resolves the functions' environments with it
    functions = sam_resolve(env_vars=env_file)["functions"]

    # THEN every function gets every override: the template declares each variable
    for name, environment in functions.items():
        assert {key: environment[key] for key in aws} == aws, name
        assert settings_from(environment).n_threads == 3, name


# --- the local template: the chosen API mode, the build arguments ----------------------------------


@pytest.mark.parametrize(("auth", "function"), [("IAM", "ApiFunction"), ("API_KEY", "KeyApiFunction")])
def test_local_template_serves_the_routes_from_the_chosen_auth_mode(tmp_path: Path, auth: str, function: str) -> None:
    # GIVEN the local template for one API mode
    document = local_template(load_template(TEMPLATE), {"ApiAuth": auth})
    path = write_local_template(document, tmp_path / "template.yaml")

    # WHEN sam local start-api's route provider reads it
    resolved = sam_resolve(path, routes=True)

    # THEN every route is served by that mode's function, and the other mode's is gone
    served = {(route["path"], route["function"]) for route in resolved["routes"]}
    assert served == {(route, function) for route in API_ROUTES}
    assert {"ApiFunction", "KeyApiFunction"} & set(resolved["functions"]) == {function}


def test_template_yaml_alone_serves_the_routes_from_the_wrong_mode() -> None:
    # Why the local template exists: sam ignores Condition, and the API_KEY pair, last, takes every route.
    served = {route["function"] for route in sam_resolve(routes=True)["routes"]}

    assert served == {"KeyApiFunction"}


def test_local_template_sets_build_args_and_ca_secret_on_every_image_function(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    build_args = {"MODEL": "smollm2-135m-instruct-q4_1", "BASE_IMAGE": STAND_IN_BASE}

    document = local_template(load_template(TEMPLATE), {"ApiAuth": "IAM"}, build_args, ca)

    functions = {name: res for name, res in document["Resources"].items() if res["Type"] == "AWS::Serverless::Function"}
    assert set(functions) == {
        "GenerateFunction",
        "ApiFunction",
        "BatchFunction",
        "BatchFilesFunction",
        "WorkerFunction",
    }
    for name, resource in functions.items():
        assert resource["Metadata"]["DockerBuildArgs"] == build_args, name
        assert resource["Metadata"]["DockerBuildExtraParams"] == ["--secret", f"id=ca-bundle,src={ca}"], name
    assert all("Condition" not in res for res in document["Resources"].values())


def test_local_template_passes_sam_validate_lint(tmp_path: Path) -> None:
    document = local_template(load_template(TEMPLATE), {"ApiAuth": "API_KEY"}, {"MODEL": "m"})
    path = write_local_template(document, tmp_path / "template.yaml")
    sam = ROOT / ".venv-sam" / "bin" / "sam"

    result = subprocess.run(
        [str(sam), "validate", "--lint", "--template", str(path), "--region", "us-east-1"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SAM_CLI_TELEMETRY": "0"},
        timeout=300,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_local_template_rejects_unknown_parameters_and_values() -> None:
    template = load_template(TEMPLATE)
    with pytest.raises(LoopError, match="unknown template parameters: Nope"):
        local_template(template, {"Nope": "1"})
    with pytest.raises(LoopError, match="ApiAuth='NONE' is not one of"):
        local_template(template, {"ApiAuth": "NONE"})


# --- the handler, behind the Lambda runtime, in the environment sam local gives it -----------------


def test_handler_runs_in_the_environment_sam_local_gives_it(
    tiny_model: Path, results_table: Table, tmp_path: Path
) -> None:
    # GIVEN GenerateFunction's environment as sam local resolves it, with the local loop's overrides
    env_file = tmp_path / "env.json"
    overrides = {"TABLE_NAME": results_table.name, "AWS_ENDPOINT_URL_DYNAMODB": results_table.endpoint_url}
    env_file.write_text(json.dumps({"Parameters": overrides}), encoding="utf-8")
    environment = sam_resolve(env_vars=env_file)["functions"]["GenerateFunction"]
    assert environment["N_THREADS"] == ""
    assert environment["RESULT_TTL_DAYS"] == ""
    # (the model lives elsewhere than in the image, and no queue is running here)
    environment.update(MODEL_PATH=str(tiny_model), WORK_QUEUE_URL="")

    # WHEN a sample event is invoked through the Runtime Interface Emulator
    with start_emulator(results_table, tmp_path / "emulator.log", **environment) as emulator:
        answer = emulator.invoke(load_event("summarize.json"))

    # THEN it is answered and stored, not refused as a configuration error
    assert "error" not in answer, answer
    assert answer["status"] == "DONE"
    assert answer["metrics"]["n_threads"] == available_cpus()
    assert [item["id"] for item in results_table.items()] == [answer["id"]]


def test_sam_env_script_refuses_to_run_without_the_sam_cli() -> None:
    # scripts/sam/resolver.py says where to run it instead of failing on an import.
    result = subprocess.run(
        [sys.executable, "-m", "scripts.sam.resolver"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if result.returncode == 0:
        pytest.skip("this Python has the SAM CLI")
    assert result.returncode == 2
    assert ".venv-sam/bin/python" in result.stderr


def test_local_template_serves_the_api_buffered_through_the_classic_handler() -> None:
    # GIVEN the deployed template, whose API function streams
    document = local_template(load_template(TEMPLATE), {"ApiAuth": "IAM"})
    properties = document["Resources"]["ApiFunction"]["Properties"]
    # THEN sam local runs the classic handler through the image's runtime client, its events buffered
    assert properties["ImageConfig"] == {"Command": ["handler.entry.api.lambda_handler"]}
    assert all("ResponseTransferMode" not in event["Properties"] for event in properties["Events"].values())
    assert document["Resources"]["WorkerFunction"]["Properties"]["ImageConfig"]["Command"] == [
        "handler.entry.worker.worker_handler"
    ]
