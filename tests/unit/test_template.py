"""template.yaml is the one definition of the table and the function's permissions: the code must agree."""

from __future__ import annotations

import importlib
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from handler.entry.api_request_body import MULTIPART_FORM_DATA
from handler.storage import attributes as store
from handler.storage import bucket as batch_bucket
from handler.storage import caller_files
from scripts.local.cfn_template import load_template, table_spec_from_template, ttl_spec_from_template
from scripts.repository import ROOT, TEMPLATE
from scripts.sam.api import API_ROUTES, CONSOLE_ROUTES
from scripts.sam.template import UNAUTHENTICATED_OWNER, local_template


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


def _s3_grants(policy: str) -> dict[str, set[str]]:
    """What ``policy`` allows in the batch bucket: each S3 action, and the keys (patterns) of the objects it may
    touch, or ``*`` for ListBucket (the whole bucket: S3 answers a missing key 404 only to a caller that may list
    the bucket, and a GetObject request carries no prefix that a condition could match)."""
    statements = _resource(policy)["Properties"]["PolicyDocument"]["Statement"]
    bucket_name, bucket_variables = _resource("BatchBucket")["Properties"]["BucketName"]["Fn::Sub"]
    bucket_arn = "arn:${AWS::Partition}:s3:::" + bucket_name
    grants: dict[str, set[str]] = defaultdict(set)
    for statement in statements:
        assert statement["Effect"] == "Allow"
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for resource in resources:
            arn, variables = resource["Fn::Sub"]
            assert variables == bucket_variables
            for action in statement["Action"]:
                if action == "s3:ListBucket":
                    assert arn == bucket_arn
                    assert "Condition" not in statement, "a prefix condition turns S3's 404 for a missing key into 403"
                    patterns = ["*"]
                else:
                    assert arn.startswith(f"{bucket_arn}/")
                    patterns = [arn.removeprefix(f"{bucket_arn}/")]
                grants[action.removeprefix("s3:")].update(patterns)
    return dict(grants)


def _s3_calls() -> set[str]:
    # Every call the storage code makes on its S3 client, e.g. self._s3.put_object( -> PutObject;
    # list_objects_v2 is authorized as ListBucket.
    text = "".join(path.read_text(encoding="utf-8") for path in sorted((ROOT / "handler" / "storage").glob("*.py")))
    return {
        "ListBucket" if call == "list_objects_v2" else "".join(part.capitalize() for part in call.split("_"))
        for call in re.findall(r"self\._s3\.(\w+)\b", text)
    }


@pytest.mark.parametrize("policy", ["BatchFilesPolicy", "FilesApiPolicy"])
def test_template_grants_exactly_the_s3_actions_the_code_uses(policy: str) -> None:
    assert set(_s3_grants(policy)) == _s3_calls()


def test_template_lets_the_api_reach_only_callers_files_batches_and_new_open_batches() -> None:
    files, batches = caller_files.FILES_PREFIX + "*", caller_files.BATCHES_PREFIX + "*"

    assert _s3_grants("FilesApiPolicy") == {
        "GetObject": {files, batches},
        "PutObject": {files, batches, batch_bucket.OPEN_PREFIX + "*"},
        "DeleteObject": {files, batches},
        "ListBucket": {"*"},
    }


def test_template_lets_the_batch_functions_write_api_batches_files_and_records() -> None:
    files, batches = caller_files.FILES_PREFIX + "*", caller_files.BATCHES_PREFIX + "*"
    open_batches = batch_bucket.OPEN_PREFIX + "*"
    manifests = "manifests/*"
    assert batch_bucket.OPEN_PREFIX.startswith("manifests/")
    assert batch_bucket.DONE_PREFIX.startswith("manifests/")

    assert _s3_grants("BatchFilesPolicy") == {
        "GetObject": {"*"},
        "PutObject": {batch_bucket.OUTPUT_PREFIX + "*", manifests, files, batches},
        "DeleteObject": {open_batches},
        # Listing open batches; and S3's 404 (not 403) for an object that is gone.
        "ListBucket": {"*"},
    }


def test_template_functions_use_the_results_policy_and_their_entry_points() -> None:
    commands = {
        "GenerateFunction": None,
        "BatchFunction": ["handler.entry.schedule.schedule_handler"],
        "BatchFilesFunction": ["handler.entry.batch_bucket.batch_file_handler"],
        "WorkerFunction": ["handler.entry.worker.worker_handler"],
        "ApiFunction": ["handler.entry.api.stream_handler"],
        "KeyApiFunction": ["handler.entry.api.stream_handler"],
    }
    # The functions that read batch files or write their outputs have the bucket's policy too, and the API
    # functions the one for callers' files and batches.
    bucket_policies = {
        "BatchFunction": "BatchFilesPolicy",
        "BatchFilesFunction": "BatchFilesPolicy",
        "ApiFunction": "FilesApiPolicy",
        "KeyApiFunction": "FilesApiPolicy",
    }
    for logical_id, command in commands.items():
        properties = _resource(logical_id)["Properties"]
        policies = [
            {"Ref": "ResultsAccessPolicy"},
            *([{"Ref": bucket_policies[logical_id]}] if logical_id in bucket_policies else []),
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


def test_template_both_apis_serve_every_route_and_pass_uploads_as_binary() -> None:
    for api, function in (("Api", "ApiFunction"), ("KeyApi", "KeyApiFunction")):
        # A multipart upload (POST /v1/files) reaches the function base64-encoded, its bytes as sent
        # (API Gateway writes "/" in a media type as "~1").
        assert _resource(api)["Properties"]["BinaryMediaTypes"] == [MULTIPART_FORM_DATA.replace("/", "~1")]
        events = list(_resource(function)["Properties"]["Events"].values())
        assert sorted(event["Properties"]["Path"] for event in events) == sorted(API_ROUTES)
        for event in events:
            assert event["Type"] == "Api"
            assert event["Properties"]["RestApiId"] == {"Ref": api}
            # The console serves pages and files (GET); every other route takes the methods its handler answers.
            console = event["Properties"]["Path"] in CONSOLE_ROUTES
            assert event["Properties"]["Method"] == ("get" if console else "any")


@pytest.mark.parametrize(
    ("api", "function", "api_auth", "console_auth"),
    [
        # SigV4 on every route by default; the console's routes turn the authorizer off.
        ("Api", "ApiFunction", {"DefaultAuthorizer": "AWS_IAM"}, {"Authorizer": "NONE"}),
        # An API key on every route by default; the console's routes do without one.
        ("KeyApi", "KeyApiFunction", {"ApiKeyRequired": True}, {"ApiKeyRequired": False}),
    ],
)
def test_template_serves_the_console_without_auth_and_every_other_route_with_it(
    api: str, function: str, api_auth: dict[str, Any], console_auth: dict[str, Any]
) -> None:
    # A browser's navigation to the page can neither sign a request nor send x-api-key: the page and its files are
    # open, and the routes its calls reach keep the API's auth.
    assert api_auth.items() <= _resource(api)["Properties"]["Auth"].items()
    events = _resource(function)["Properties"]["Events"].values()

    # An event without Auth takes the API's; only the console's events set their own.
    auth_by_path = {event["Properties"]["Path"]: event["Properties"].get("Auth") for event in events}
    overridden = {path: auth for path, auth in auth_by_path.items() if auth is not None}
    assert overridden == dict.fromkeys(CONSOLE_ROUTES, console_auth)


def test_only_the_local_template_lets_requests_without_an_identity_through() -> None:
    # Deployed, every request carries an API key's id or an IAM principal: nothing names an owner for the others.
    assert UNAUTHENTICATED_OWNER not in TEMPLATE.read_text(encoding="utf-8")

    # sam local start-api gives none: the local template declares the variable (unset) on the API function, for
    # the local loop's --env-vars file to set (sam local passes only the variables a template declares).
    for auth, function in (("IAM", "ApiFunction"), ("API_KEY", "KeyApiFunction")):
        resources = local_template(load_template(TEMPLATE), {"ApiAuth": auth})["Resources"]
        declaring = {name for name, resource in resources.items() if UNAUTHENTICATED_OWNER in json.dumps(resource)}
        assert declaring == {function}
        assert resources[function]["Properties"]["Environment"]["Variables"] == {UNAUTHENTICATED_OWNER: ""}
