"""template.yaml is the one definition of the table and the function's permissions: the code must agree."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

from handler.storage import attributes as store
from scripts.local.cfn_template import load_template, table_spec_from_template, ttl_spec_from_template
from scripts.repository import ROOT, TEMPLATE


def _resource(logical_id: str) -> dict[str, Any]:
    resource: dict[str, Any] = load_template(TEMPLATE)["Resources"][logical_id]
    return resource


def test_template_table_key_is_the_store_key() -> None:
    spec = table_spec_from_template(TEMPLATE)

    assert spec["KeySchema"] == [{"AttributeName": store.KEY, "KeyType": "HASH"}]


def test_template_status_index_matches_the_store() -> None:
    spec = table_spec_from_template(TEMPLATE)

    (index,) = spec["GlobalSecondaryIndexes"]
    assert index["IndexName"] == store.STATUS_INDEX
    assert index["KeySchema"] == [
        {"AttributeName": store.STATUS, "KeyType": "HASH"},
        {"AttributeName": store.CREATED_AT, "KeyType": "RANGE"},
    ]
    assert index["Projection"] == {"ProjectionType": "ALL"}


def test_template_key_attributes_are_strings_as_the_store_writes_them() -> None:
    spec = table_spec_from_template(TEMPLATE)

    types = {a["AttributeName"]: a["AttributeType"] for a in spec["AttributeDefinitions"]}
    assert types == {store.KEY: "S", store.STATUS: "S", store.CREATED_AT: "S"}


def test_template_ttl_attribute_is_the_one_the_store_sets() -> None:
    assert ttl_spec_from_template(TEMPLATE) == {"AttributeName": store.EXPIRES_AT, "Enabled": True}


def _table_calls(sources: list[Path]) -> set[str]:
    # Every call the store makes on its table or the table's client, e.g. self._table.put_item( -> PutItem.
    text = "".join(source.read_text(encoding="utf-8") for source in sources)
    calls = re.findall(r"self\._table\.(\w+)\(", text) + re.findall(r"client\.(batch_\w+)\b", text)
    return {"".join(part.capitalize() for part in call.split("_")) for call in calls}


def test_template_grants_exactly_the_dynamodb_actions_the_code_uses() -> None:
    statements = _resource("ResultsAccessPolicy")["Properties"]["PolicyDocument"]["Statement"]
    dynamodb = [s for s in statements if s["Action"][0].startswith("dynamodb:")]

    granted = {action.removeprefix("dynamodb:") for s in dynamodb for action in s["Action"]}
    assert granted == _table_calls(sorted((ROOT / "handler" / "storage").glob("*.py")))
    for statement in dynamodb:
        if statement["Action"] == ["dynamodb:Query"]:
            assert statement["Resource"] == {"Fn::Sub": "${ResultsTable.Arn}/index/" + store.STATUS_INDEX}
        else:
            assert statement["Resource"] == {"Fn::GetAtt": ["ResultsTable", "Arn"]}


def test_template_grants_exactly_the_s3_actions_the_code_uses() -> None:
    statements = _resource("BatchFilesPolicy")["Properties"]["PolicyDocument"]["Statement"]
    granted = {action.removeprefix("s3:") for statement in statements for action in statement["Action"]}
    text = (ROOT / "handler" / "storage" / "bucket.py").read_text(encoding="utf-8")
    calls = set(re.findall(r"self\._s3\.(\w+)\b", text))
    # list_objects_v2 is authorized as ListBucket; the others by their own names.
    used = {
        "ListBucket" if call == "list_objects_v2" else "".join(p.capitalize() for p in call.split("_"))
        for call in calls
    }
    assert granted == used


def test_template_functions_use_the_results_policy_and_their_entry_points() -> None:
    commands = {
        "GenerateFunction": None,
        "BatchFunction": ["handler.entry.schedule.schedule_handler"],
        "BatchFilesFunction": ["handler.entry.batch_bucket.batch_file_handler"],
        "WorkerFunction": ["handler.entry.worker.worker_handler"],
        "ApiFunction": ["handler.entry.api.stream_handler"],
        "KeyApiFunction": ["handler.entry.api.stream_handler"],
    }
    # The functions that read batch files or write their outputs have the bucket's policy too.
    with_files = {"BatchFunction", "BatchFilesFunction"}
    for logical_id, command in commands.items():
        properties = _resource(logical_id)["Properties"]
        policies = [
            {"Ref": "ResultsAccessPolicy"},
            *([{"Ref": "BatchFilesPolicy"}] if logical_id in with_files else []),
        ]
        assert properties["Policies"] == policies
        assert properties.get("ImageConfig", {}).get("Command") == command
        if command:
            module, function = command[0].rsplit(".", 1)
            assert callable(getattr(importlib.import_module(module), function))


def _alarms() -> dict[str, dict[str, Any]]:
    resources = load_template(TEMPLATE)["Resources"]
    return {name: spec for name, spec in resources.items() if spec["Type"] == "AWS::CloudWatch::Alarm"}


def _watched(alarm: dict[str, Any]) -> tuple[str, str, Any]:
    properties = alarm["Properties"]
    return properties["Namespace"], properties["MetricName"], properties["Dimensions"][0]["Value"]


def test_template_alarms_watch_every_dead_letter_queue_function_and_the_queue_s_age() -> None:
    resources = load_template(TEMPLATE)["Resources"]
    alarms = _alarms()
    watched = [_watched(alarm) for alarm in alarms.values()]
    # Every dead-letter queue: the work queue's, and the one SAM makes for the schedule's failed deliveries.
    assert (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        {"Fn::GetAtt": ["WorkDeadLetterQueue", "QueueName"]},
    ) in watched
    schedule = resources["BatchFunction"]["Properties"]["Events"]["Schedule"]
    assert schedule["Properties"]["DeadLetterConfig"] == {"Type": "SQS"}
    dlq = {"Fn::GetAtt": ["BatchFunctionScheduleQueue", "QueueName"]}  # SAM's name for that queue
    assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible", dlq) in watched
    assert ("AWS/SQS", "ApproximateAgeOfOldestMessage", {"Fn::GetAtt": ["WorkQueue", "QueueName"]}) in watched
    # Every function, errors and throttles, under the function's own condition.
    functions = [name for name, spec in resources.items() if spec["Type"] == "AWS::Serverless::Function"]
    assert len(functions) == 7  # the worker twice: on-demand, or on Lambda Managed Instances
    for function in functions:
        for metric in ("Errors", "Throttles"):
            [alarm] = [a for a in alarms.values() if _watched(a) == ("AWS/Lambda", metric, {"Ref": function})]
            assert alarm.get("Condition") == resources[function].get("Condition")
    # Each notifies the topic when one is given.
    topic = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    assert all(alarm["Properties"]["AlarmActions"] == topic for alarm in alarms.values())


def test_template_api_functions_stream_through_the_streaming_runtime_on_every_route() -> None:
    for logical_id in ("ApiFunction", "KeyApiFunction"):
        properties = _resource(logical_id)["Properties"]
        assert properties["ImageConfig"]["EntryPoint"] == ["python3", "-m", "handler.entry.streaming_runtime_client"]
        assert properties["Timeout"] == 900
        for event in properties["Events"].values():
            assert event["Properties"]["ResponseTransferMode"] == "RESPONSE_STREAM"
            assert event["Properties"]["TimeoutInMillis"] == 900_000
