"""A SAM/CloudFormation template read as data (short-form tags too), and its DynamoDB table as create_table arguments.

Importing this module has no side effects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

# create_table arguments whose CloudFormation shape is the same as the API's.
_TABLE_KEYS = (
    "AttributeDefinitions",
    "KeySchema",
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
    "BillingMode",
    "ProvisionedThroughput",
    "OnDemandThroughput",
    "TableClass",
)
_INDEX_KEYS = ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput", "OnDemandThroughput")


class _CloudFormationLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation short tags (!Ref, !Sub, ...) into their long form."""


def _construct_intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:
        raise yaml.constructor.ConstructorError(None, None, f"unexpected node for !{suffix}", node.start_mark)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    if suffix == "Condition":
        return {"Condition": value}
    return {f"Fn::{suffix}": value}


_CloudFormationLoader.add_multi_constructor("!", _construct_intrinsic)


def _is_intrinsic(value: object) -> bool:
    if not isinstance(value, dict) or len(value) != 1:
        return False
    key = next(iter(value))
    return isinstance(key, str) and (key in {"Ref", "Condition"} or key.startswith("Fn::"))


_DROPPED = object()


def _literal(value: Any) -> Any:
    """``value`` when it is plain data, else ``_DROPPED``.

    A mapping with an intrinsic function anywhere inside is dropped whole (half a spec is worse than
    none); list items that are dropped leave the rest of the list (a conditional index, say).
    """
    if _is_intrinsic(value):
        return _DROPPED
    if isinstance(value, dict):
        kept = {key: _literal(item) for key, item in value.items()}
        return _DROPPED if any(item is _DROPPED for item in kept.values()) else kept
    if isinstance(value, list):
        return [item for item in (_literal(element) for element in value) if item is not _DROPPED]
    return value


def load_template(template_path: Path) -> dict[str, Any]:
    """Parse a SAM/CloudFormation template, tolerating short-form intrinsic tags."""
    with Path(template_path).open(encoding="utf-8") as stream:
        document = yaml.load(stream, Loader=_CloudFormationLoader)
    if not isinstance(document, dict):
        raise ValueError(f"{template_path}: not a CloudFormation template (top level is not a mapping)")
    return document


def _table_properties(template_path: Path, logical_id: str) -> dict[str, Any]:
    resources = load_template(template_path).get("Resources") or {}
    resource = resources.get(logical_id)
    if not isinstance(resource, dict) or resource.get("Type") != "AWS::DynamoDB::Table":
        tables = sorted(
            name
            for name, res in resources.items()
            if isinstance(res, dict) and res.get("Type") == "AWS::DynamoDB::Table"
        )
        raise ValueError(
            f"{template_path}: no AWS::DynamoDB::Table resource {logical_id!r} (tables found: {tables or 'none'})"
        )
    properties = resource.get("Properties") or {}
    if not isinstance(properties, dict):
        raise ValueError(f"{template_path}: {logical_id}.Properties is not a mapping")
    return properties


def table_spec_from_template(template_path: Path, logical_id: str = "ResultsTable") -> dict[str, Any]:
    """``create_table`` keyword arguments (without TableName) from the template's table resource.

    Properties that are not ``create_table`` arguments (TTL, point-in-time recovery, SSE, tags) and values
    that are intrinsic functions are left out; TTL comes from :func:`ttl_spec_from_template`.
    """
    properties = _table_properties(template_path, logical_id)
    spec: dict[str, Any] = {}
    for key in _TABLE_KEYS:
        value = _literal(properties.get(key))
        if value is None or value is _DROPPED or value == []:
            continue
        if key in {"GlobalSecondaryIndexes", "LocalSecondaryIndexes"}:
            value = [{k: v for k, v in index.items() if k in _INDEX_KEYS} for index in value]
        spec[key] = value
    for required in ("AttributeDefinitions", "KeySchema"):
        if not spec.get(required):
            raise ValueError(f"{template_path}: {logical_id} has no literal {required}")
    return spec


def ttl_spec_from_template(template_path: Path, logical_id: str = "ResultsTable") -> dict[str, Any] | None:
    """The table's ``TimeToLiveSpecification`` (for ``update_time_to_live``), or None when it has none."""
    ttl = _literal(_table_properties(template_path, logical_id).get("TimeToLiveSpecification"))
    if not isinstance(ttl, dict) or "AttributeName" not in ttl:
        return None
    enabled = ttl.get("Enabled", False)
    if isinstance(enabled, str):
        enabled = enabled.strip().lower() == "true"
    return {"AttributeName": str(ttl["AttributeName"]), "Enabled": bool(enabled)}
