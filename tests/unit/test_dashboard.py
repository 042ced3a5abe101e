"""The CloudWatch dashboard in template.yaml names only what exists: each LlmService metric is one the code emits,
under the namespace and dimensions it emits them with; each queue and function is one the template defines, in
every combination of the conditions that decide which functions a stack has; its cost is the docs' arithmetic.
"""

from __future__ import annotations

import ast
import itertools
import json
import operator
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from handler.core.observability import metrics
from handler.domain.answers import Metrics as GenerationMetrics
from handler.domain.requests import TASKS
from handler.usecases.metrics import (
    METRIC_UNITS,
    RUN_COUNTS,
    emit_cached,
    emit_failed,
    emit_generation,
    emit_run,
)
from scripts.batch.export import PRICE_PER_GB_S
from scripts.local.cfn_template import load_template
from scripts.repository import TEMPLATE
from scripts.sam.template import local_template

SERVICE_NAMESPACE = "LlmService"
#: The queue SAM makes for the batch function's schedule (its DeadLetterConfig): not in template.yaml's Resources.
SCHEDULE_DEAD_LETTER_QUEUE = "BatchFunctionScheduleQueue"
#: ${...} in the body: a parameter, a pseudo parameter, a Sub variable, a resource (Ref) or a resource's attribute.
PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")


# -- what the code emits ----------------------------------------------------------------------------------------


def _emitted_by(emit: Callable[[], None]) -> dict[str, Any]:
    """The EMF document ``emit``'s metrics are flushed as: the code's own names, namespace and dimensions."""
    metrics.clear_metrics()
    try:
        emit()
        document: dict[str, Any] = json.loads(json.dumps(metrics.serialize_metric_set()))  # as the log line has it
    finally:
        metrics.clear_metrics()
    return document


def _metric_names(document: dict[str, Any]) -> set[str]:
    return {metric["Name"] for group in document["_aws"]["CloudWatchMetrics"] for metric in group["Metrics"]}


def _every_generation_field() -> GenerationMetrics:
    """A generation's metrics with every field given (load_ms too: only the request that loaded the model has it)."""
    return GenerationMetrics(**dict.fromkeys(GenerationMetrics.model_fields, 1))


def _emit_answers() -> None:
    for task in TASKS:
        emit_generation(task, _every_generation_field())
        emit_cached(task)
        emit_failed(task)


def _emit_scheduled_run() -> None:
    # A scheduled run's report, as the batch function flushes it at the end of a run (batch_* counts and speed).
    emit_run(dict.fromkeys(RUN_COUNTS, 1), tokens_per_s=1.0)


@pytest.fixture(scope="module")
def emitted() -> list[dict[str, Any]]:
    return [_emitted_by(_emit_answers), _emitted_by(_emit_scheduled_run)]


# -- the dashboard's body ---------------------------------------------------------------------------------------


def _body(template: dict[str, Any], given: dict[str, str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The dashboard's JSON with ``given`` values, else the parameters' defaults, in place; and its Sub variables.

    Only parameters may stand outside a JSON string (a number such as MemorySize); every other placeholder stays
    as written, inside its string, for ``_resolve`` to say what it names.
    """
    text, variables = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    values = {name: str(spec["Default"]) for name, spec in template["Parameters"].items()} | (given or {})
    body: dict[str, Any] = json.loads(PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text))
    return body, variables


def _resolve(value: str, variables: dict[str, Any], resources: dict[str, Any]) -> Any:
    """What a placeholder in the body names, as CloudFormation would read it (a Sub variable's value, a Ref, a
    GetAtt); the text itself if it holds none."""
    match = PLACEHOLDER.fullmatch(value)
    if match is None:
        assert "${" not in value, value
        return value
    name = match.group(1)
    if name in variables:
        return variables[name]
    resource, _, attribute = name.partition(".")
    assert resource in resources or resource == SCHEDULE_DEAD_LETTER_QUEUE, f"{name} is not in the template"
    return {"Fn::GetAtt": [resource, attribute]} if attribute else {"Ref": resource}


def _metric_widgets(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from (widget for widget in body["widgets"] if widget["type"] == "metric")


def _metric_rows(body: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, str], dict[str, Any]]]:
    """Each metric the widgets draw: namespace, name, dimensions, options (math expressions are not metrics)."""
    for widget in _metric_widgets(body):
        for row in widget["properties"]["metrics"]:
            if isinstance(row[0], dict):
                assert set(row[0]) >= {"expression", "id"}, row
                continue
            options = row[-1] if isinstance(row[-1], dict) else {}
            namespace, name, *pairs = row[: len(row) - (1 if options else 0)]
            assert len(pairs) % 2 == 0, row
            yield namespace, name, dict(zip(pairs[::2], pairs[1::2], strict=True)), options


def _dashboard() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    template = load_template(TEMPLATE)
    body, variables = _body(template)
    return template, body, variables


# -- the service's metrics ---------------------------------------------------------------------------------------


def test_dashboard_names_only_metrics_the_code_emits_with_their_namespace_and_dimensions(
    emitted: list[dict[str, Any]],
) -> None:
    template, body, _ = _dashboard()
    environment = template["Globals"]["Function"]["Environment"]["Variables"]
    emitted_names = set().union(*(_metric_names(document) for document in emitted))
    # What every one of them is emitted under: the template's namespace, Powertools' service dimension alone.
    for document in emitted:
        [group] = document["_aws"]["CloudWatchMetrics"]
        assert group["Namespace"] == environment["POWERTOOLS_METRICS_NAMESPACE"] == SERVICE_NAMESPACE
        assert group["Dimensions"] == [["service"]]
        assert document["service"] == environment["POWERTOOLS_SERVICE_NAME"]

    rows = list(_metric_rows(body))
    shown = [(name, dimensions) for namespace, name, dimensions, _ in rows if namespace == SERVICE_NAMESPACE]

    assert {name for name, _ in shown} <= emitted_names
    assert all(dimensions == {"service": environment["POWERTOOLS_SERVICE_NAME"]} for _, dimensions in shown)
    # Nothing else in the service's own namespace under a misspelt name: every namespace is LlmService or AWS's.
    assert {namespace for namespace, *_ in rows} == {SERVICE_NAMESPACE, "AWS/SQS", "AWS/Lambda"}


def test_dashboard_counts_answers_by_task_generated_cached_and_failed(emitted: list[dict[str, Any]]) -> None:
    _, body, _ = _dashboard()
    [answers] = [w for w in _metric_widgets(body) if w["properties"]["title"].startswith("Per minute, by task")]
    # Every count the answer emitters make (generations_, cached_answers_, failed_<task>), per minute, summed.
    counts = _metric_names(emitted[0]) - set(METRIC_UNITS)
    assert len(counts) == 3 * len(TASKS)

    assert {row[1] for row in answers["properties"]["metrics"]} == counts
    assert (answers["properties"]["stat"], answers["properties"]["period"]) == ("Sum", 60)
    # And every count of a scheduled run.
    [runs] = [w for w in _metric_widgets(body) if w["properties"]["title"].startswith("Scheduled runs")]
    run_counts = {name for name in _metric_names(emitted[1]) if METRIC_UNITS.get(name) is None}
    assert {row[1] for row in runs["properties"]["metrics"]} == run_counts - {"batch_tokens_per_s"}


@pytest.mark.parametrize("speed", ["prompt_tokens_per_s", "eval_tokens_per_s", "total_ms"])
def test_dashboard_shows_p50_and_p90_of_speeds_and_seconds(speed: str) -> None:
    _, body, _ = _dashboard()

    statistics = {options.get("stat") for _, name, _, options in _metric_rows(body) if name == speed}

    assert {"p50", "p90"} <= statistics


# -- the cost of an answer ---------------------------------------------------------------------------------------

_ARITHMETIC: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def _evaluate(expression: str, values: dict[str, float]) -> float:
    """A metric math expression of + - * / over numbers and the named series' values."""

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
            return _ARITHMETIC[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.Name):
            return values[node.id]
        raise AssertionError(f"not arithmetic: {ast.dump(node)}")

    return value(ast.parse(expression, mode="eval").body)


@pytest.mark.parametrize("architecture", sorted(PRICE_PER_GB_S))
def test_dashboard_cost_is_seconds_times_memory_times_the_gb_second_price(architecture: str) -> None:
    template, _, variables = _dashboard()
    # The price follows the Architecture parameter (arm64 costs less), at the prices the docs and the export use.
    assert set(template["Parameters"]["Architecture"]["AllowedValues"]) == set(PRICE_PER_GB_S)
    condition, arm64, x86_64 = variables["GbSecondPrice"]["Fn::If"]
    assert template["Conditions"][condition] == {"Fn::Equals": [{"Ref": "Architecture"}, "arm64"]}
    price = {"arm64": arm64, "x86_64": x86_64}[architecture]
    assert float(price) == PRICE_PER_GB_S[architecture]
    # GIVEN a stack of 4 GB, on that architecture
    body, _ = _body(template, {"MemorySize": "4096", "GbSecondPrice": price})
    [widget] = [w for w in _metric_widgets(body) if w["properties"]["title"].startswith("Estimated cost")]
    rows = widget["properties"]["metrics"]
    [average] = [row for row in rows if not isinstance(row[0], dict)]
    [cost] = [row[0] for row in rows if isinstance(row[0], dict)]
    assert average[:2] == [SERVICE_NAMESPACE, "total_ms"]
    assert average[-1]["stat"] == "Average"

    # WHEN answers take 3 s on average
    usd_per_thousand = _evaluate(cost["expression"], {average[-1]["id"]: 3000.0})

    # THEN 1,000 of them cost 3 s x 4 GB x the price, a thousand times
    assert usd_per_thousand == pytest.approx(3.0 * 4.0 * PRICE_PER_GB_S[architecture] * 1000)


# -- queues and functions, in every combination of conditions --------------------------------------------------

COMBINATIONS = [
    {"ApiAuth": auth, "ManagedInstances": managed}
    for auth, managed in itertools.product(["IAM", "API_KEY"], ["false", "true"])
]


def _alarmed(resources: dict[str, Any]) -> set[tuple[str, str, str]]:
    """What the template's alarms watch: namespace, metric and the resource named by their one dimension."""
    watched = set()
    for resource in resources.values():
        if resource["Type"] == "AWS::CloudWatch::Alarm":
            properties = resource["Properties"]
            [dimension] = properties["Dimensions"]
            watched.add((properties["Namespace"], properties["MetricName"], json.dumps(dimension["Value"])))
    return watched


@pytest.mark.parametrize("parameters", COMBINATIONS, ids=lambda p: f"{p['ApiAuth']}-managed-{p['ManagedInstances']}")
def test_dashboard_watches_the_template_s_queues_and_every_function_the_stack_has(parameters: dict[str, str]) -> None:
    # GIVEN the template as CloudFormation sees it for these parameters: resources whose condition is false are gone,
    # and every Fn::If on those conditions has taken its branch
    stack = local_template(load_template(TEMPLATE), parameters)
    resources = stack["Resources"]
    body, variables = _body(stack)

    # WHEN each AWS metric's dimension is resolved to what it names
    shown = {
        (namespace, name, json.dumps(_resolve(value, variables, resources)))
        for namespace, name, dimensions, _ in _metric_rows(body)
        if namespace.startswith("AWS/")
        for value in dimensions.values()
    }
    functions = {json.loads(named)["Ref"] for namespace, _, named in shown if namespace == "AWS/Lambda"}
    queues = {json.loads(named)["Fn::GetAtt"][0] for namespace, _, named in shown if namespace == "AWS/SQS"}

    # THEN every function this stack has (and only those) shows its errors and throttles
    assert functions == {name for name, res in resources.items() if res["Type"] == "AWS::Serverless::Function"}
    for function in functions:
        for metric in ("Errors", "Throttles"):
            assert ("AWS/Lambda", metric, json.dumps({"Ref": function})) in shown
    # AND the queues are the template's: the work queue, its dead letters, the schedule's undelivered runs
    sqs_queues = {name for name, res in resources.items() if res["Type"] == "AWS::SQS::Queue"}
    assert queues == sqs_queues | {SCHEDULE_DEAD_LETTER_QUEUE}
    # AND whatever an alarm watches is on the dashboard too
    assert _alarmed(resources) <= shown


def test_dashboard_url_is_a_stack_output() -> None:
    template = load_template(TEMPLATE)

    url = template["Outputs"]["DashboardUrl"]["Value"]["Fn::Sub"]

    assert url == (
        "https://${AWS::Region}.console.aws.amazon.com/cloudwatch/home?region=${AWS::Region}#dashboards:name=${Dashboard}"
    )
    assert template["Resources"]["Dashboard"]["Type"] == "AWS::CloudWatch::Dashboard"
    assert "Condition" not in template["Resources"]["Dashboard"]
