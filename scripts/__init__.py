"""The repository's tooling, one package per job; run a command with ``python -m scripts.<package>[.<module>]``.

    repository.py    the repository's root and the named defaults (the served model, the local image's, the bench's)
    export_openapi.py  openapi.json, generated from the API's code
    local/           the local runtime: the Runtime Interface Emulator, moto, a streaming Runtime API; `make run`
                     (local.invoke) and `make serve` (local.serve)
    sam/             the local SAM loop: `sam build` and `sam local` against a local DynamoDB and SQS (`make sam-*`)
    models/          model manifests and downloads (the image's model stage runs them), the generated test model
    builds/          the image's build steps: llama.cpp compiled with the image's flags, the Lambda task root
    docker/          Docker helpers: a Docker engine for the local targets, the arm64 image under emulation
    batch/           batch pre-generation: requests queued into the results table, results exported
    bench/           the speed benchmark (`make bench`)

Standard library only at import: the image's build stages import this package without the service's dependencies.
"""
