"""template.yaml as `sam build` and `sam local` should see it: one API mode's resources, the images' build arguments.

`sam local` ignores ``Condition``, so the resources of the other ``ApiAuth`` mode are left out (it
would otherwise serve every route from whichever API function comes last); every image function's
``DockerBuildArgs`` take the model and base image, and a CA bundle goes to the build as a BuildKit secret.
The API functions stream their responses when deployed; `sam local` cannot (its emulator reads a response
whole), so here they run the classic handler with their events buffered. `sam local start-api` gives a request
no caller identity, so the API functions also declare UNAUTHENTICATED_OWNER here (empty, unset), for the
``--env-vars`` file to name the local caller: `sam local` passes only the variables a template declares.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from scripts.sam.loop import LOCAL_TEMPLATE, LoopError

#: The module a streaming function's image runs (template.yaml), and the handler `sam local` serves instead.
STREAMING_RUNTIME = "handler.entry.streaming_runtime_client"
CLASSIC_API_HANDLER = "handler.entry.api.lambda_handler"
#: Whose files and batches an API request without an identity gets (handler/core/settings.py); local only.
UNAUTHENTICATED_OWNER = "UNAUTHENTICATED_OWNER"


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
    """``template`` (long-form intrinsics, as cfn_template.load_template reads it) for `sam build` and `sam local`.

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
    _drop_unused_conditions(document)
    for resource in document["Resources"].values():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        if (resource.get("Properties") or {}).get("PackageType") != "Image":
            continue
        _served_locally(resource["Properties"])
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
        f"python -m scripts.sam build{'; ' + given if given else ''}.]"
    )
    return document


def _drop_unused_conditions(document: dict[str, Any]) -> None:
    """Leave out the conditions nothing refers to any more (those only resources left out used)."""
    conditions: dict[str, Any] = document.get("Conditions") or {}
    while conditions:
        rest = json.dumps({key: value for key, value in document.items() if key != "Conditions"})
        others = json.dumps(conditions)
        unused = [
            name
            for name in conditions
            if f'"Fn::If": ["{name}"' not in rest
            and f'"Condition": "{name}"' not in rest
            and f'{{"Condition": "{name}"}}' not in others
        ]
        if not unused:
            break
        for name in unused:
            del conditions[name]


def _served_locally(properties: dict[str, Any]) -> None:
    """A streaming API function as `sam local` can serve it: the classic handler through the image's own runtime
    client, its events buffered (sam local start-api and the emulator read a response whole; the answers are the
    same, server-sent events included, in one body), and UNAUTHENTICATED_OWNER declared for --env-vars to set."""
    image = properties.get("ImageConfig") or {}
    if STREAMING_RUNTIME not in (image.get("EntryPoint") or []):
        return
    properties["ImageConfig"] = {"Command": [CLASSIC_API_HANDLER]}
    environment = properties.setdefault("Environment", {})
    environment["Variables"] = {**(environment.get("Variables") or {}), UNAUTHENTICATED_OWNER: ""}
    for event in (properties.get("Events") or {}).values():
        for key in ("ResponseTransferMode", "TimeoutInMillis"):
            (event.get("Properties") or {}).pop(key, None)


def write_local_template(document: Mapping[str, Any], path: Path = LOCAL_TEMPLATE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (
        "# Generated by `python -m scripts.sam build` from template.yaml for `sam build` and `sam local`;"
        " edit that instead.\n"
    )
    path.write_text(text + yaml.safe_dump(dict(document), sort_keys=False, width=120), encoding="utf-8")
    return path
