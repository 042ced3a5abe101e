#!/bin/sh
# The stand-in base's entry point, as in AWS's Lambda base images: with AWS_LAMBDA_RUNTIME_API set (on
# Lambda, and under `sam local`, whose emulator sets it) the runtime starts at once; without it (a plain
# `docker run`), the Runtime Interface Emulator from the SAM CLI wheel serves the invoke API on port 8080.
if [ $# -ne 1 ]; then
  echo "entrypoint requires the handler name to be the first argument" 1>&2
  exit 142
fi
export _HANDLER="$1"

RUNTIME_ENTRYPOINT=/var/runtime/bootstrap
if [ -z "${AWS_LAMBDA_RUNTIME_API}" ]; then
  exec /usr/local/bin/aws-lambda-rie "$RUNTIME_ENTRYPOINT"
else
  exec "$RUNTIME_ENTRYPOINT"
fi
