"""The local SAM loop: the image that `sam build` makes, run by `sam local` against a local DynamoDB and SQS.

``python -m scripts.sam`` is the command (__main__.py); each step has its module: template, build, aws, invoke,
api; loop.py holds what they share. resolver.py runs with the SAM CLI's own Python.
"""
