# The function's container image: llama.cpp compiled for Lambda's CPUs, the task root, the GGUF model.
#
#   docker buildx build --platform linux/amd64 -t llm-service .     (linux/arm64 for an arm64 function)
#   docker buildx build --build-arg MODEL=qwen3-4b-q4 ...           (another manifest in layers/models/)
#   docker buildx build --build-arg MODEL_FILE=models/local/Phi-3-mini-4k-instruct-q4.gguf ...  (offline)
#   sam build --use-buildkit                                        (template.yaml names this file)
#   docker buildx build --build-arg BASE_IMAGE=llm-service/lambda-python-stand-in:bookworm ...
#                                                   (the local stand-in base: image/base/, `make sam-base`)
#   docker buildx build --secret id=ca-bundle,src=/path/to/ca.pem ...  (TLS re-signed by a proxy's CA)
#
# Needs BuildKit (RUN --mount, COPY --link): Docker 23+ or buildx. `sam build` without --use-buildkit
# uses the legacy builder, which stops at the first RUN --mount.
# MODEL_FILE: a GGUF under models/local/ in the build context, the only part of models/ that
# .dockerignore lets through. It is verified against the MODEL manifest (size, sha256) like a download.

# The tag of Lambda's Python 3.12 image (Amazon Linux 2023): a dated release, used by every stage. To
# pin its digest too, run
#   docker buildx imagetools inspect public.ecr.aws/lambda/python:3.12.2026.10.03.13
# and append the top-level "Digest:" it prints (the multi-arch index, right for both architectures):
#   ARG PYTHON_IMAGE_TAG=3.12.2026.10.03.13@sha256:<digest>
ARG PYTHON_IMAGE_TAG=3.12.2026.10.03.13
# The base of every stage. Where AWS's image cannot be pulled (no registry reachable), a stand-in with
# the same interface is built from Debian's packages (image/base/build.sh, `make sam-base`) under a name
# of its own, and given here: --build-arg BASE_IMAGE=llm-service/lambda-python-stand-in:bookworm
ARG BASE_IMAGE=public.ecr.aws/lambda/python:${PYTHON_IMAGE_TAG}

# --- build: llama-cpp-python compiled for the target CPUs, then the task root ---------------------------
FROM ${BASE_IMAGE} AS build
ARG TARGETARCH
ARG BASE_IMAGE
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
# Amazon Linux 2023 locks its repositories to the base image's release, so the pinned base tag pins
# these packages' versions too. An optional BuildKit secret ca-bundle (a PEM file: `--secret
# id=ca-bundle,src=ca.pem`) is trusted by dnf and pip where TLS is re-signed (a corporate proxy); unused
# when not given.
# hadolint ignore=DL3041
RUN --mount=type=secret,id=ca-bundle,required=false \
    echo "base image: ${BASE_IMAGE}"; \
    ca=(); if [[ -s /run/secrets/ca-bundle ]]; then ca=(--setopt=sslcacert=/run/secrets/ca-bundle); fi; \
    dnf install -y "${ca[@]}" gcc gcc-c++ cmake make && dnf clean all
WORKDIR /src
COPY layers/runtime/requirements.txt layers/runtime/
COPY layers/build/ layers/build/
# The scripts package's root (its paths and defaults, standard library only) and the image's build steps:
# scripts/builds/ (llama.cpp's build, the task root). Changing them compiles llama.cpp again; they rarely change.
COPY scripts/__init__.py scripts/repository.py scripts/
COPY scripts/builds/ scripts/builds/
# The wheels get a layer of their own, so a handler change does not compile llama.cpp again. No pip
# cache: its wheels are keyed by the source, not by CMAKE_ARGS, and --no-binary keeps any prebuilt
# llama-cpp-python wheel (built for some other CPU) out. scripts/builds/llama.py reads the flags file
# exactly as `make setup` does for the development build.
RUN --mount=type=secret,id=ca-bundle,required=false \
    if [[ -s /run/secrets/ca-bundle ]]; then export PIP_CERT=/run/secrets/ca-bundle; fi; \
    args="layers/build/cmake-${TARGETARCH}.args"; \
    if [[ ! -f "$args" ]]; then echo "no $args (TARGETARCH='${TARGETARCH}'): build with BuildKit for linux/amd64 or linux/arm64" >&2; exit 1; fi; \
    CMAKE_ARGS="$(python -m scripts.builds.llama --print-cmake-args --flags "$args")"; \
    echo "CMAKE_ARGS=${CMAKE_ARGS}"; \
    CMAKE_ARGS="$CMAKE_ARGS" FORCE_CMAKE=1 python -m pip wheel --no-cache-dir --no-binary llama-cpp-python \
        --wheel-dir /build/wheels --requirement layers/runtime/requirements.txt
# Extra builds for CPUs with more instruction sets, each from a layers/build/cmake-<arch>-<name>.args
# (x86_64: AVX-512 without AMX, about 1.5x the AVX2 build's prompt speed where the host has it; see
# docs/perf.md). Their libraries go to /build/llama-builds/<name> with the CPU flags they need; the
# handler picks one at cold start (handler/engine/builds.py) and falls back to the packaged AVX2 build.
RUN --mount=type=secret,id=ca-bundle,required=false \
    if [[ -s /run/secrets/ca-bundle ]]; then export PIP_CERT=/run/secrets/ca-bundle; fi; \
    mkdir -p /build/llama-builds; \
    for args in layers/build/cmake-"${TARGETARCH}"-*.args; do \
        [[ -f "$args" ]] || continue; \
        name="${args##*/cmake-"${TARGETARCH}"-}"; name="${name%.args}"; \
        python -m scripts.builds.llama --flags "$args" --cache /tmp/llama-wheels --lib-dir "/build/llama-builds/${name}"; \
        cat "/build/llama-builds/${name}/llama-cpp-build.json"; \
    done; \
    rm -rf /tmp/llama-wheels
COPY handler/ handler/
# Then the build log shows the instruction sets llama.cpp was compiled for (fixed at compile time).
RUN PIP_NO_INDEX=1 PIP_FIND_LINKS=/build/wheels python -m scripts.builds.task_root --out /build/task; \
    PYTHONPATH=/build/task python -c "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())"

# --- model: the GGUF and its sha256 sidecar; the same bytes for every architecture ----------------------
FROM scratch AS local-models
# The files under models/local/, if any: a pattern that matches nothing copies nothing.
COPY models/loca[l] /

# Data only, so it runs on the build machine's own platform instead of under emulation.
FROM --platform=$BUILDPLATFORM ${BASE_IMAGE} AS model
ARG MODEL=phi-3-mini-4k-instruct-q4
ARG MODEL_FILE=
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
WORKDIR /src
COPY requirements-dev.txt ./
# The scripts package's root, then scripts/models/: the download runs on the standard library only.
COPY scripts/__init__.py scripts/repository.py scripts/
COPY scripts/models/ scripts/models/
COPY layers/models/ layers/models/
# The handler reads the model's identity from <MODEL_PATH>.sha256, so model.gguf gets a sidecar of its
# own; the symlink keeps the published file name visible in the image. huggingface-hub is pinned in
# requirements-dev.txt (read by grep), which hadolint cannot see.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=local-models,target=/local \
    --mount=type=secret,id=ca-bundle,required=false \
    if [[ -s /run/secrets/ca-bundle ]]; then export PIP_CERT=/run/secrets/ca-bundle; fi; \
    if [[ -n "$MODEL_FILE" ]]; then \
        if [[ "$MODEL_FILE" != models/local/* ]]; then echo "MODEL_FILE must be a file under models/local/, not $MODEL_FILE" >&2; exit 1; fi; \
        path="$(python -m scripts.models.download --model "$MODEL" --local "/local/${MODEL_FILE#models/local/}" --out-dir /opt/model)"; \
    else \
        hub="$(grep -E '^huggingface-hub==' requirements-dev.txt)" || { echo "no huggingface-hub pin in requirements-dev.txt" >&2; exit 1; }; \
        python -m pip install --no-cache-dir --target /tmp/hub "$hub"; \
        path="$(PYTHONPATH=/tmp/hub python -m scripts.models.download --model "$MODEL" --out-dir /opt/model)"; \
    fi; \
    ln -s "$(basename "$path")" /opt/model/model.gguf; \
    printf '%s  model.gguf\n' "$(cut -d ' ' -f 1 "$path.sha256")" > /opt/model/model.gguf.sha256; \
    chmod -R a+rX /opt/model; \
    ls -l /opt/model

# --- the function -----------------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
ARG BASE_IMAGE
# checkov:skip=CKV_DOCKER_7: BASE_IMAGE defaults to the dated tag PYTHON_IMAGE_TAG (digest optional); checkov reads the variable as untagged
# checkov:skip=CKV_DOCKER_3: Lambda runs the function as its own unprivileged user whatever USER says; the check below reads everything as uid 65534
# Lambda does not run container health checks (it watches the runtime API), so none is declared.
HEALTHCHECK NONE
LABEL org.opencontainers.image.base.name="${BASE_IMAGE}"
# The model first, as a layer of its own that does not depend on the layers under it (--link): code
# changes neither rebuild nor re-push its gigabytes.
COPY --link --from=model /opt/model /opt/model
COPY --link --from=build /build/task ${LAMBDA_TASK_ROOT}
COPY --link --from=build /build/llama-builds /opt/llama-cpp
# Only /tmp is writable on Lambda; nothing is downloaded at run time.
ENV MODEL_PATH=/opt/model/model.gguf \
    LLAMA_CPP_BUILDS_DIR=/opt/llama-cpp \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    HF_HOME=/tmp/hf \
    HF_HUB_OFFLINE=1 \
    PYTHONDONTWRITEBYTECODE=1
# Fail the build rather than the first invocation: as an unprivileged user, as on Lambda, import the
# handler and llama.cpp's packaged libraries from this image and read the model and its sidecar; then
# load the build the cold start would choose on this build machine's CPU.
WORKDIR ${LAMBDA_TASK_ROOT}
RUN echo "base image: ${BASE_IMAGE}"; \
    python -c "import os, sys; os.setgroups([]); os.setgid(65534); os.setuid(65534); \
import handler.entry.api, handler.entry.batch_bucket, handler.entry.direct, handler.entry.schedule, handler.entry.worker; \
import handler.entry.streaming_runtime_client; \
import llama_cpp; \
print('Python', sys.version.split()[0]); \
model = os.environ['MODEL_PATH']; \
assert open(model, 'rb').read(4) == b'GGUF', model + ' is not a GGUF file'; \
assert len(open(model + '.sha256').read().split()[0]) == 64, model + '.sha256 holds no sha256'; \
print(llama_cpp.llama_print_system_info().decode())"; \
    python -c "import os; os.setgroups([]); os.setgid(65534); os.setuid(65534); \
from pathlib import Path; from handler.engine import builds as llama_builds; \
choice = llama_builds.select_build(Path(os.environ['LLAMA_CPP_BUILDS_DIR'])); \
print('llama.cpp build chosen on this build machine:', choice.build, '-', choice.reason); \
import llama_cpp; \
print('its instruction sets:', llama_cpp.llama_print_system_info().decode())"
CMD ["handler.entry.direct.lambda_handler"]
