"""Local stand-ins for the AWS pieces, one import away: the Lambda Runtime Interface Emulator and DynamoDB (moto).

The pieces live in their own modules: lambda_emulator.py (the emulator running the handler),
local_moto.py (moto in server mode, a DynamoDB client for it, its dummy credentials) and
cfn_template.py (template.yaml read as data, its table as create_table arguments). The tests and the
scripts take them from here. Importing this module has no side effects; everything starts inside the
context managers.
"""

from __future__ import annotations

from cfn_template import load_template, table_spec_from_template, ttl_spec_from_template
from lambda_emulator import LambdaEmulator, LambdaEmulatorError
from local_moto import DEFAULT_REGION, DUMMY_CREDENTIALS, MotoDynamoDB, create_table_from_template, dynamodb_client

__all__ = [
    "DEFAULT_REGION",
    "DUMMY_CREDENTIALS",
    "LambdaEmulator",
    "LambdaEmulatorError",
    "MotoDynamoDB",
    "create_table_from_template",
    "dynamodb_client",
    "load_template",
    "table_spec_from_template",
    "ttl_spec_from_template",
]
