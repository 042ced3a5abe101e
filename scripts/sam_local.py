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
import contextlib
import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import localenv

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = REPO_ROOT / "template.yaml"
LOCAL_DIR = REPO_ROOT / ".aws-sam" / "local"
LOCAL_TEMPLATE = LOCAL_DIR / "template.yaml"
BUILT_TEMPLATE = REPO_ROOT / ".aws-sam" / "build" / "template.yaml"
ENV_FILE = LOCAL_DIR / "env.json"
BUILD_LOG = LOCAL_DIR / "build.log"
DEFAULT_TABLE = "llm-results-local"
DEFAULT_QUEUE = "llm-work-local"
DEFAULT_BUCKET = "llm-batches-local"
DEFAULT_DB_PORT = 4510
#: The small real model baked into local images (its manifest takes it from a PyPI wheel).
DEFAULT_MODEL = "smollm2-135m-instruct-q4_1"
STAND_IN_BASE = "llm-service/lambda-python-stand-in:bookworm"
SEED_EVENTS = ("events/summarize.json", "events/translate.json", "events/chat-solve.json")
API_ROUTES = (
    "/summarize",
    "/translate",
    "/chat",
    "/results/{id}",
    "/v1/chat/completions",
    "/v1/chat/completions/{completion_id}",
    "/v1/models",
    "/v1/models/{model}",
)


class LoopError(RuntimeError):
    """A step of the local loop failed; the message says which and why."""


def log(message: str) -> None:
    print(f"[sam-local] {message}", file=sys.stderr, flush=True)


# --- the template as sam local should see it ------------------------------------------------------


def parameter_values(template: Mapping[str, Any], overrides: Mapping[str, str]) -> dict[str, str]:
    """Each parameter's value: its override, else its default (as strings, as CloudFormation compares them)."""
    parameters = template.get("Parameters") or {}
    unknown = sorted(set(overrides) - set(parameters))
    if unknown:
        raise LoopError(f"unknown template parameters: {', '.join(unknown)}")
    values = {name: str(spec.get("Default", "")) for name, spec in parameters.items()}
    values.update(overrides)
    for name, value in values.items():
        allowed = parameters[name].get("AllowedValues")
        if allowed and value not in [str(v) for v in allowed]:
            raise LoopError(f"parameter {name}={value!r} is not one of {allowed}")
    return values


def evaluate_conditions(template: Mapping[str, Any], parameters: Mapping[str, str]) -> dict[str, bool]:
    """The template's conditions (Fn::Equals, Not, And, Or, Condition over parameter Refs) for these values."""
    conditions = template.get("Conditions") or {}
    results: dict[str, bool] = {}

    def value(node: Any) -> str:
        if isinstance(node, dict) and set(node) == {"Ref"}:
            if node["Ref"] not in parameters:
                raise LoopError(f"condition refers to {node['Ref']!r}, which is not a parameter")
            return parameters[node["Ref"]]
        if isinstance(node, str | int | float | bool):
            return str(node).lower() if isinstance(node, bool) else str(node)
        raise LoopError(f"cannot evaluate {node!r} in a condition")

    def truth(node: Any) -> bool:
        if not isinstance(node, dict) or len(node) != 1:
            raise LoopError(f"cannot evaluate condition {node!r}")
        ((key, args),) = node.items()
        if key == "Condition":
            return condition(args)
        if key == "Fn::Equals":
            return value(args[0]) == value(args[1])
        if key == "Fn::Not":
            return not truth(args[0])
        if key == "Fn::And":
            return all(truth(arg) for arg in args)
        if key == "Fn::Or":
            return any(truth(arg) for arg in args)
        raise LoopError(f"cannot evaluate condition function {key}")

    def condition(name: str) -> bool:
        if name not in results:
            if name not in conditions:
                raise LoopError(f"unknown condition {name!r}")
            results[name] = truth(conditions[name])
        return results[name]

    for name in conditions:
        condition(name)
    return results


def _resolve_ifs(node: Any, decided: Mapping[str, bool]) -> Any:
    """``node`` with every Fn::If on a decided condition replaced by the branch it takes."""
    if isinstance(node, dict):
        if set(node) == {"Fn::If"} and isinstance(node["Fn::If"], list) and node["Fn::If"][0] in decided:
            name, when_true, when_false = node["Fn::If"]
            return _resolve_ifs(when_true if decided[name] else when_false, decided)
        return {key: _resolve_ifs(value, decided) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolve_ifs(item, decided) for item in node]
    return node


def local_template(
    template: Mapping[str, Any],
    parameters: Mapping[str, str] | None = None,
    build_args: Mapping[str, str] | None = None,
    ca_bundle: Path | None = None,
) -> dict[str, Any]:
    """``template`` (long-form intrinsics, as localenv.load_template reads it) for `sam build` and `sam local`.

    Resources (and outputs) whose condition is false for ``parameters`` are left out, and Fn::If on
    those conditions takes its branch, so nothing refers to what was left out. Conditions that decide
    no resource (Threads, ResultTtlDays) stay, so ``--parameter-overrides`` still work at run time.
    """
    document = copy.deepcopy(dict(template))
    values = parameter_values(document, parameters or {})
    conditions = evaluate_conditions(document, values)
    resources: dict[str, Any] = document.get("Resources") or {}
    deciding = {res["Condition"] for res in resources.values() if isinstance(res, dict) and "Condition" in res}
    outputs: dict[str, Any] = document.get("Outputs") or {}
    deciding |= {out["Condition"] for out in outputs.values() if isinstance(out, dict) and "Condition" in out}
    decided = {name: conditions[name] for name in deciding}

    def kept(section: Mapping[str, Any]) -> dict[str, Any]:
        result = {}
        for name, entry in section.items():
            if isinstance(entry, dict) and "Condition" in entry:
                if not decided[entry["Condition"]]:
                    continue
                entry = {key: value for key, value in entry.items() if key != "Condition"}
            result[name] = _resolve_ifs(entry, decided)
        return result

    document["Resources"] = kept(resources)
    if outputs:
        document["Outputs"] = kept(outputs)
    # The decided conditions are applied: drop them, unless another condition builds on one.
    remaining = {name: spec for name, spec in (document.get("Conditions") or {}).items() if name not in decided}
    needed = {name for name in decided if f'{{"Condition": "{name}"}}' in json.dumps(remaining)}
    if document.get("Conditions"):
        document["Conditions"] = {
            name: spec for name, spec in document["Conditions"].items() if name not in decided or name in needed
        }
    for resource in document["Resources"].values():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        if (resource.get("Properties") or {}).get("PackageType") != "Image":
            continue
        metadata = resource.setdefault("Metadata", {})
        metadata["DockerBuildArgs"] = {**(metadata.get("DockerBuildArgs") or {}), **(build_args or {})}
        if ca_bundle is not None:
            metadata["DockerBuildExtraParams"] = [
                *(metadata.get("DockerBuildExtraParams") or []),
                "--secret",
                f"id=ca-bundle,src={ca_bundle}",
            ]
    given = ", ".join(f"{key}={value}" for key, value in sorted((parameters or {}).items()))
    document["Description"] = (
        f"{str(document.get('Description', '')).strip()} [Local SAM loop: generated from template.yaml by "
        f"scripts/sam_local.py{'; ' + given if given else ''}.]"
    )
    return document


def write_local_template(document: Mapping[str, Any], path: Path = LOCAL_TEMPLATE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (
        "# Generated by scripts/sam_local.py from template.yaml for `sam build` and `sam local`; edit that instead.\n"
    )
    path.write_text(text + yaml.safe_dump(dict(document), sort_keys=False, width=120), encoding="utf-8")
    return path


# --- docker, the base image and sam --------------------------------------------------------------


def sam_command() -> list[str]:
    """The SAM CLI: $SAM_CLI, else .venv-sam's, else `sam` on PATH."""
    given = os.environ.get("SAM_CLI")
    if given:
        return [given]
    local = REPO_ROOT / ".venv-sam" / "bin" / "sam"
    if local.is_file():
        return [str(local)]
    found = shutil.which("sam")
    if found is None:
        raise LoopError("the SAM CLI is not installed: run `make setup` (it installs it into .venv-sam)")
    return [found]


def sam_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for sam: no telemetry, dummy credentials (the containers get them), one region."""
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", **localenv.DUMMY_CREDENTIALS}
    env.update({"AWS_DEFAULT_REGION": localenv.DEFAULT_REGION, "AWS_REGION": localenv.DEFAULT_REGION})
    # sam lets the shell override the variables a function declares: keep this shell's out of it.
    for name in (
        "TABLE_NAME",
        "WORK_QUEUE_URL",
        "BATCH_BUCKET",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_ENDPOINT_URL_SQS",
        "AWS_ENDPOINT_URL_S3",
        "MODEL_PATH",
    ):
        env.pop(name, None)
    env.update(extra or {})
    return env


def docker_answers() -> str | None:
    """None when `docker info` works, else why not."""
    if shutil.which("docker") is None:
        return "no docker command on PATH"
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    return None if result.returncode == 0 else (result.stderr.strip() or result.stdout.strip())[:500]


def require_docker() -> None:
    problem = docker_answers()
    if problem is not None:
        raise LoopError(f"no Docker engine: {problem} (scripts/docker_engine.sh installs or starts one)")


def image_exists(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True, check=False).returncode == 0


def image_size_mb(name: str) -> float:
    out = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Size}}", name], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip()) / 1e6


def docker_gateway() -> str:
    """The address of this host on Docker's default bridge: where `sam local` containers reach a local server."""
    out = subprocess.run(
        ["docker", "network", "inspect", "bridge", "--format", "{{range .IPAM.Config}}{{.Gateway}} {{end}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    gateways = [word for word in out.stdout.split() if word.count(".") == 3]
    if out.returncode != 0 or not gateways:
        raise LoopError(f"cannot read the Docker bridge's gateway address: {out.stderr.strip() or out.stdout.strip()}")
    return gateways[0]


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


# --- build ---------------------------------------------------------------------------------------


def model_file_for(model: str) -> str | None:
    """The model's GGUF under models/local/ (hard-linked from models/ when it is there), else None."""
    manifest = json.loads((REPO_ROOT / "layers" / "models" / f"{model}.json").read_text(encoding="utf-8"))
    filename = str(manifest["filename"])
    local = REPO_ROOT / "models" / "local" / filename
    if not local.is_file():
        source = REPO_ROOT / "models" / filename
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
        localenv.load_template(TEMPLATE),
        {"ApiAuth": args.api_auth},
        build_args,
        args.ca_bundle.resolve() if args.ca_bundle else None,
    )
    path = write_local_template(template)
    log(f"template for sam local: {path.relative_to(REPO_ROOT)} (ApiAuth={args.api_auth})")
    command = [
        *sam_command(),
        "build",
        "--template-file",
        str(path),
        "--base-dir",
        str(REPO_ROOT),
        "--config-file",
        str(REPO_ROOT / "samconfig.toml"),
        "--use-buildkit",
    ]
    log("$ " + " ".join(command))
    started = time.monotonic()
    BUILD_LOG.parent.mkdir(parents=True, exist_ok=True)
    with BUILD_LOG.open("w", encoding="utf-8") as build_log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=sam_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert process.stdout is not None
        for line in process.stdout:
            build_log.write(line)
            if not args.quiet:
                sys.stderr.write(line)
        returncode = process.wait()
    elapsed = time.monotonic() - started
    if returncode != 0:
        raise LoopError(f"sam build failed (exit {returncode}) after {elapsed:.0f} s; log: {BUILD_LOG}")
    log(f"sam build: {elapsed:.0f} s; log: {BUILD_LOG.relative_to(REPO_ROOT)}")
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
        raise LoopError(f"{template.relative_to(REPO_ROOT)} is missing: run `make sam-build` first")
    document = localenv.load_template(template)
    return {
        name: str(res["Properties"]["ImageUri"])
        for name, res in (document.get("Resources") or {}).items()
        if isinstance(res, dict)
        and res.get("Type") == "AWS::Serverless::Function"
        and "ImageUri" in res.get("Properties", {})
    }


# --- local AWS: DynamoDB and SQS in one moto server ----------------------------------------------


@contextlib.contextmanager
def moto_server(host: str, port: int = 0) -> Iterator[localenv.MotoDynamoDB]:
    """localenv's moto server (every service moto has, one request at a time) listening on ``host``:
    the Docker bridge's gateway, which containers and this host both reach."""
    server = localenv.MotoDynamoDB(port, host=host)
    try:
        server.__enter__()
    except RuntimeError as exc:
        raise LoopError(str(exc)) from exc
    try:
        yield server
    finally:
        server.__exit__(None, None, None)


@dataclass
class LocalAws:
    """The local table and queue, and the `--env-vars` file that points the functions at them."""

    endpoint_url: str
    table: str
    queue_url: str
    env_file: Path
    env: dict[str, str] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        import boto3

        make_client: Any = boto3.client  # one client per service name given at run time
        return make_client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=localenv.DEFAULT_REGION,
            aws_access_key_id=localenv.DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=localenv.DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=localenv.DUMMY_CREDENTIALS["AWS_SESSION_TOKEN"],
        )

    def item(self, item_id: str) -> dict[str, Any] | None:
        from boto3.dynamodb.types import TypeDeserializer

        found = self.client("dynamodb").get_item(TableName=self.table, Key={"id": {"S": item_id}}, ConsistentRead=True)
        raw = found.get("Item")
        if raw is None:
            return None
        deserializer = TypeDeserializer()
        return {key: deserializer.deserialize(value) for key, value in raw.items()}

    def receive(self, wait_s: int = 2) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = (
            self.client("sqs")
            .receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s)
            .get("Messages", [])
        )
        return messages


def prepare_local_aws(
    endpoint_url: str, env_file: Path, table: str = DEFAULT_TABLE, queue: str = DEFAULT_QUEUE
) -> LocalAws:
    """Create the table (from template.yaml) and the queue on ``endpoint_url``; write the env-vars file."""
    localenv.create_table_from_template(endpoint_url, table, TEMPLATE)
    aws = LocalAws(endpoint_url, table, "", env_file)
    aws.queue_url = aws.client("sqs").create_queue(QueueName=queue)["QueueUrl"]
    # The batch bucket too: the template names it from the stack's id, which sam local makes up.
    aws.client("s3").create_bucket(Bucket=DEFAULT_BUCKET)
    aws.env = {
        "TABLE_NAME": table,
        "WORK_QUEUE_URL": aws.queue_url,
        "BATCH_BUCKET": DEFAULT_BUCKET,
        "AWS_ENDPOINT_URL_DYNAMODB": endpoint_url,
        "AWS_ENDPOINT_URL_SQS": endpoint_url,
        "AWS_ENDPOINT_URL_S3": endpoint_url,
    }
    env_file.parent.mkdir(parents=True, exist_ok=True)
    # The CloudFormation-parameter form applies to every function.
    env_file.write_text(json.dumps({"Parameters": aws.env}, indent=2) + "\n", encoding="utf-8")
    return aws


@contextlib.contextmanager
def local_aws(env_file: Path, port: int = 0) -> Iterator[LocalAws]:
    require_docker()
    with moto_server(docker_gateway(), port) as server:
        yield prepare_local_aws(server.endpoint_url, env_file)


# --- sam local invoke ----------------------------------------------------------------------------


@dataclass
class Invocation:
    response: dict[str, Any]
    seconds: float
    logs: str


def sam_invoke(function: str, event: Path, env_file: Path, template: Path = BUILT_TEMPLATE) -> Invocation:
    """`sam local invoke FUNCTION --event EVENT --env-vars ENV_FILE`: the function's JSON answer and its logs."""
    command = [
        *sam_command(),
        "local",
        "invoke",
        function,
        "--template-file",
        str(template),
        "--event",
        str(event),
        "--env-vars",
        str(env_file),
        "--skip-pull-image",
    ]
    started = time.monotonic()
    result = subprocess.run(command, cwd=REPO_ROOT, env=sam_environment(), capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    try:
        response = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        response = None
    if result.returncode != 0 or not isinstance(response, dict):
        raise LoopError(
            f"sam local invoke {function} --event {event} failed (exit {result.returncode}); stdout:\n"
            f"{result.stdout[-2000:]}\nstderr:\n{result.stderr[-4000:]}"
        )
    return Invocation(response, seconds, result.stderr)


def generate_event(*words: str) -> dict[str, Any]:
    """`sam local generate-event WORDS...` as a dict."""
    result = subprocess.run(
        [*sam_command(), "local", "generate-event", *words],
        env=sam_environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise LoopError(f"sam local generate-event {' '.join(words)} failed: {result.stderr[-1000:]}")
    event: dict[str, Any] = json.loads(result.stdout)
    return event


def invoke(args: argparse.Namespace) -> int:
    events = [Path(e) for e in (args.events or SEED_EVENTS)]
    failures = 0
    with local_aws(LOCAL_DIR / "invoke-env.json") as aws:
        log(f"DynamoDB and SQS (moto): {aws.endpoint_url}, table {aws.table}")
        first: dict[str, Any] | None = None
        runs = [*events, events[0]]
        for number, event in enumerate(runs, start=1):
            repeat = number == len(runs)
            label = f"{event} again" if repeat else str(event)
            done = sam_invoke("GenerateFunction", event, aws.env_file)
            answer = done.response
            print(f"\n=== sam local invoke GenerateFunction --event {label} ({done.seconds:.1f} s) ===")
            print(json.dumps(answer, indent=2, ensure_ascii=False))
            problem = check_answer(answer, aws)
            if (
                repeat
                and first is not None
                and not problem
                and (answer.get("cached") is not True or answer.get("id") != first.get("id"))
            ):
                problem = "the repeated event was not answered from the table (cached is not true)"
            if number == 1:
                first = answer
            if problem:
                failures += 1
                print(f"ERROR: {label}: {problem}", file=sys.stderr)
            else:
                print(f"--- {label}: stored, {'cached' if answer.get('cached') else 'generated'}")
    if failures:
        print(f"{failures} of {len(runs)} invocations failed", file=sys.stderr)
        return 1
    return 0


def check_answer(answer: Mapping[str, Any], aws: LocalAws) -> str | None:
    """None when ``answer`` is a DONE answer with text, stored in the local table; else what is wrong."""
    if "error" in answer or "errorMessage" in answer:
        return f"error answer: {json.dumps(answer.get('error') or answer)[:1000]}"
    if answer.get("status") != "DONE" or not str(answer.get("output", "")).strip():
        return f"no finished output (status {answer.get('status')!r})"
    item = aws.item(str(answer.get("id")))
    if item is None or item.get("status") != "DONE":
        return f"item {answer.get('id')} is not DONE in table {aws.table}: {item and item.get('status')}"
    return None


# --- sam local start-api -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def start_api(env_file: Path, log_path: Path, template: Path = BUILT_TEMPLATE, timeout_s: float = 120) -> Iterator[str]:
    """`sam local start-api` on a free loopback port (warm containers), yielding its base URL."""
    port = free_port()
    command = [
        *sam_command(),
        "local",
        "start-api",
        "--template-file",
        str(template),
        "--env-vars",
        str(env_file),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--warm-containers",
        "LAZY",
        "--skip-pull-image",
    ]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w", encoding="utf-8") as output:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=sam_environment(),
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise LoopError(f"sam local start-api exited ({process.returncode}):\n{log_path.read_text()[-3000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise LoopError(
                    f"sam local start-api does not listen after {timeout_s:.0f} s:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)  # sam stops its warm containers on Ctrl-C
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: Any
    seconds: float


def http(
    method: str,
    url: str,
    body: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> HttpAnswer:
    """One HTTP request (no proxies), its JSON body decoded when it is JSON."""
    data = body.encode("utf-8") if isinstance(body, str) else body
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    started = time.monotonic()
    try:
        with opener.open(request, timeout=timeout) as response:
            status, raw, got = response.status, response.read(), dict(response.headers.items())
    except urllib.error.HTTPError as exc:
        status, raw, got = exc.code, exc.read(), dict(exc.headers.items())
    seconds = time.monotonic() - started
    try:
        decoded: Any = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        decoded = raw.decode("utf-8", errors="replace")
    return HttpAnswer(status, {key.lower(): value for key, value in got.items()}, decoded, seconds)


def request_body(event: str) -> str:
    """A seed event as an API body (the route implies the task)."""
    return json.dumps(json.loads((REPO_ROOT / event).read_text(encoding="utf-8")))


def api(args: argparse.Namespace) -> int:
    failures = 0

    def expect(label: str, answer: HttpAnswer, status: int, check: str | None = None) -> None:
        nonlocal failures
        ok = answer.status == status and check is None
        shown = json.dumps(answer.body)[:300]
        print(f"{'ok  ' if ok else 'FAIL'} {label}: HTTP {answer.status} ({answer.seconds:.1f} s) {shown}")
        if not ok:
            failures += 1
            print(f"     expected HTTP {status}{'; ' + check if check else ''}", file=sys.stderr)

    with local_aws(LOCAL_DIR / "api-env.json") as aws:
        log(f"DynamoDB and SQS (moto): {aws.endpoint_url}, table {aws.table}")
        # A result in the table first, as a batch run would leave it: the API answers it at once.
        seeded = sam_invoke("GenerateFunction", REPO_ROOT / SEED_EVENTS[0], aws.env_file)
        log(f"seeded the table with {SEED_EVENTS[0]} through sam local invoke ({seeded.seconds:.1f} s)")
        with start_api(aws.env_file, LOCAL_DIR / "start-api.log") as url:
            log(f"sam local start-api: {url} (log {LOCAL_DIR / 'start-api.log'})")
            json_type = {"Content-Type": "application/json"}
            cached = http("POST", f"{url}/summarize", request_body(SEED_EVENTS[0]), json_type)
            expect(
                "POST /summarize (in the table)",
                cached,
                200,
                None if cached.body and cached.body.get("cached") is True else "cached true",
            )
            queued = http(
                "POST", f"{url}/translate", request_body(SEED_EVENTS[1]), {**json_type, "Prefer": "respond-async"}
            )
            location = queued.headers.get("location", "")
            expect(
                "POST /translate (Prefer: respond-async)",
                queued,
                202,
                None if location.startswith("/") else "a Location header",
            )
            chat = http("POST", f"{url}/chat", request_body(SEED_EVENTS[2]), {**json_type, "Prefer": "respond-async"})
            expect("POST /chat (Prefer: respond-async)", chat, 202)
            if location:
                pending = http("GET", f"{url}{location}")
                expect(
                    f"GET {location}",
                    pending,
                    200,
                    None if pending.body and pending.body.get("status") == "PENDING" else "status PENDING",
                )
            done = http("GET", f"{url}/results/{seeded.response.get('id')}")
            expect(
                "GET /results/{id} (done)",
                done,
                200,
                None if done.body and done.body.get("status") == "DONE" else "status DONE",
            )
            expect("GET /results/<unknown id>", http("GET", f"{url}/results/{'0' * 64}"), 404)
            expect("POST /summarize, malformed JSON", http("POST", f"{url}/summarize", "{", json_type), 400)
            expect("POST /summarize, no text", http("POST", f"{url}/summarize", "{}", json_type), 422)
            expect(
                "POST /summarize, text/plain",
                http("POST", f"{url}/summarize", "hello", {"Content-Type": "text/plain"}),
                415,
            )
            expect("GET /summarize", http("GET", f"{url}/summarize"), 405)
        messages = aws.receive()
        print(f"work queue: {len(messages)} message(s) queued by the API")
    if failures:
        print(f"{failures} API check(s) failed", file=sys.stderr)
        return 1
    return 0


# --- db ------------------------------------------------------------------------------------------


def db(args: argparse.Namespace) -> int:
    require_docker()
    with moto_server(docker_gateway(), args.port) as server:
        aws = prepare_local_aws(server.endpoint_url, ENV_FILE)
        rel = ENV_FILE.relative_to(REPO_ROOT)
        print(f"DynamoDB and SQS (moto): {aws.endpoint_url}; table {aws.table}; queue {aws.queue_url}")
        print(f"env-vars file: {rel}\n")
        print(f"  sam local invoke GenerateFunction --event events/summarize.json --env-vars {rel}")
        print(f"  sam local start-api --env-vars {rel}\n")
        print("Ctrl-C stops it (the table lives in this process).", flush=True)
        stop = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop)
        received = signal.sigwait(stop)
        print(f"stopping ({signal.Signals(received).name})", flush=True)
    return 0


# --- command line --------------------------------------------------------------------------------


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
