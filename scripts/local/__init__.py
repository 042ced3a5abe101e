"""The local runtime: the function run as Lambda runs it, on this machine, against local stand-ins for AWS.

The stand-ins: emulator.py (the Lambda Runtime Interface Emulator running the handler), runtime_api.py (a Runtime
API that passes streamed responses on), moto_server.py (moto in server mode for DynamoDB, and its dummy
credentials), cfn_template.py (template.yaml read as data, its table as create_table arguments). The commands:
``python -m scripts.local.invoke`` (`make run`) and ``python -m scripts.local.serve`` (`make serve`). Importing
any of them has no side effects; everything starts inside the context managers.
"""
