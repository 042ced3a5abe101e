"""template.yaml passes sam validate --lint, cfn-lint and checkov with managed instances off and on (the SAM and
lint virtualenvs' commands), and SAM's translator gives the managed worker the Globals' variables.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from scripts.local.cfn_template import load_template
from scripts.repository import ROOT, TEMPLATE
from scripts.sam.template import local_template, write_local_template

CHECKOV_CFN = ("--framework", "cloudformation", "-f")


# Each function's environment variables after SAM's own translator (the one `sam deploy` uses) applies the Globals.
TRANSLATE_ENVIRONMENT = """
import json, sys
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

class NoManagedPolicies:
    def load(self):
        return {}

template = yaml_parse(open(sys.argv[1]).read())
for resource in template["Resources"].values():
    if resource["Type"] == "AWS::Serverless::Function":
        resource["Properties"]["ImageUri"] = "123456789012.dkr.ecr.us-east-1.amazonaws.com/llm-service:latest"
out = transform(template, {}, NoManagedPolicies())
print(json.dumps({name: res["Properties"].get("Environment", {}).get("Variables", {})
    for name, res in out["Resources"].items() if res["Type"] == "AWS::Lambda::Function"}))
"""


@pytest.mark.parametrize("managed", ["false", "true"])
def test_template_validates_with_managed_instances_off_and_on(managed: str, tmp_path: Path) -> None:
    # GIVEN the template whose ManagedInstances parameter defaults to each value (the linters read defaults)
    template = load_template(TEMPLATE)
    template["Parameters"]["ManagedInstances"]["Default"] = managed
    template["Parameters"]["ManagedInstancesSubnetIds"]["Default"] = "subnet-0123456789abcdef0"
    path = write_local_template(template, tmp_path / "template.yaml")
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
    # THEN sam validate --lint, cfn-lint and checkov pass
    checks = [
        [str(ROOT / ".venv-sam/bin/sam"), "validate", "--lint", "--template", str(path), "--region", "us-east-1"],
        [str(ROOT / ".venv-sam/bin/cfn-lint"), str(path)],
        [str(ROOT / ".venv-lint/bin/checkov"), "--quiet", "--compact", "--skip-download", *CHECKOV_CFN, str(path)],
    ]
    for command in checks:
        result = subprocess.run(command, capture_output=True, text=True, check=False, env=env, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
    # AND exactly one worker exists for each value: on-demand, or on the capacity provider
    local = local_template(template, {"ManagedInstances": managed})
    workers = {name for name in local["Resources"] if name.endswith("WorkerFunction")}
    assert workers == ({"ManagedWorkerFunction"} if managed == "true" else {"WorkerFunction"})
    if managed == "true":
        properties = local["Resources"]["ManagedWorkerFunction"]["Properties"]
        assert properties["CapacityProviderConfig"]["PerExecutionEnvironmentMaxConcurrency"] == 1
        # It loads its model at init (no 10 s cap there), with the Globals' variables merged in by SAM's translator
        assert properties["Environment"]["Variables"] == {"PRELOAD_MODEL": "true"}
        translated = subprocess.run(
            [str(ROOT / ".venv-sam/bin/python"), "-c", TRANSLATE_ENVIRONMENT, str(path)],
            capture_output=True,
            text=True,
            check=True,
            env={**env, "AWS_DEFAULT_REGION": "us-east-1"},
            timeout=300,
        )
        variables = json.loads(translated.stdout.splitlines()[-1])["ManagedWorkerFunction"]
        assert variables["PRELOAD_MODEL"] == "true"
        assert variables["MODEL_PATH"] == "/opt/model/model.gguf"
        assert properties["Events"]["Work"]["Type"] == "SQS"
        assert "WorkerCapacityProvider" in local["Resources"]
