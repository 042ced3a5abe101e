#!/usr/bin/env bash
# Build the stand-in for AWS's Lambda Python base image from Debian's packages (no container registry
# needed), unless an image of the same inputs exists already. Prints the image's name on stdout.
#
#   image/base/build.sh [--force]
#
# STAND_IN_IMAGE  its name (default llm-service/lambda-python-stand-in:bookworm); never the real tag
# DEBIAN_SUITE    the Debian release of its root file system (default bookworm: Python 3.11)
# DEBIAN_MIRROR   the Debian mirror (default http://deb.debian.org/debian)
# CA_BUNDLE       a PEM file of extra trusted CAs for pip inside the build, where TLS is re-signed
#                 (a corporate proxy); passed as a BuildKit secret, unused when empty (default)
#
# The root file system is made with mmdebstrap (installed with apt-get when missing, as root on Debian)
# and imported as llm-service/debian-rootfs:$DEBIAN_SUITE; image/base/Dockerfile adds the Lambda
# interface on top, with the Runtime Interface Emulator from the SAM CLI wheel in .venv-sam.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
IMAGE="${STAND_IN_IMAGE:-llm-service/lambda-python-stand-in:bookworm}"
SUITE="${DEBIAN_SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CA="${CA_BUNDLE:-}"
ROOTFS="llm-service/debian-rootfs:$SUITE"
INCLUDE="python3,python3-venv,ca-certificates"
FORCE=0
[[ "${1:-}" == --force ]] && FORCE=1

say() { printf 'stand-in base: %s\n' "$*" >&2; }
fail() {
    printf 'stand-in base: ERROR: %s\n' "$*" >&2
    exit 1
}

case "$IMAGE" in
public.ecr.aws/lambda/* | amazon/aws-lambda-* | */lambda/python:*)
    fail "STAND_IN_IMAGE=$IMAGE looks like AWS's image name; give the stand-in a name of its own" ;;
esac
[[ -z "$CA" || -s "$CA" ]] || fail "CA_BUNDLE=$CA is not a readable, non-empty file"
docker info >/dev/null 2>&1 || fail "no Docker engine answers (run scripts/docker_engine.sh)"

case "$(uname -m)" in
x86_64 | amd64) rie_arch=x86_64 ;;
aarch64 | arm64) rie_arch=arm64 ;;
*) fail "no Runtime Interface Emulator for machine type $(uname -m)" ;;
esac
rie="$(ls "$REPO"/.venv-sam/lib/python3*/site-packages/samcli/local/rapid/aws-lambda-rie-"$rie_arch" 2>/dev/null | head -n 1 || true)"
[[ -n "$rie" ]] || fail "the SAM CLI's aws-lambda-rie-$rie_arch is not in .venv-sam (run make setup)"

label() { docker image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }

# The root file system: Debian's minimal base plus Python 3 and CA certificates.
rootfs_key="$SUITE $MIRROR $INCLUDE $(dpkg --print-architecture 2>/dev/null || uname -m)"
if [[ "$FORCE" == 1 || "$(label "$ROOTFS" llm-service.rootfs.key)" != "$rootfs_key" ]]; then
    if ! command -v mmdebstrap >/dev/null 2>&1; then
        [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1 ||
            fail "mmdebstrap is missing and cannot be installed here (needs root on Debian): apt-get install mmdebstrap"
        say "installing mmdebstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >&2 ||
            fail "apt-get install mmdebstrap failed"
    fi
    say "making the $SUITE root file system ($INCLUDE) from $MIRROR"
    start=$SECONDS
    # Standard output is the tarball; docker import reads it without a file in between.
    mmdebstrap --quiet --variant=minbase --include="$INCLUDE" --components=main "$SUITE" - "$MIRROR" |
        docker import --change "LABEL llm-service.rootfs.key=\"$rootfs_key\"" \
            --change 'CMD ["/bin/bash"]' - "$ROOTFS" >/dev/null
    say "imported $ROOTFS in $((SECONDS - start))s"
fi

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$HERE/Dockerfile" "$HERE/lambda-entrypoint.sh" "$HERE/bootstrap" "$HERE/dnf" "$context/"
cp "$rie" "$context/aws-lambda-rie"
key="$( (cd "$context" && sha256sum Dockerfile lambda-entrypoint.sh bootstrap dnf aws-lambda-rie) | sha256sum | cut -c1-16) $(docker image inspect --format '{{.Id}}' "$ROOTFS")"
if [[ "$FORCE" == 0 && "$(label "$IMAGE" llm-service.stand-in.key)" == "$key" ]]; then
    say "$IMAGE is up to date (built from $ROOTFS)"
    echo "$IMAGE"
    exit 0
fi
secret=()
if [[ -n "$CA" ]]; then
    secret=(--secret "id=ca-bundle,src=$CA")
    say "extra CA bundle for pip: $CA"
fi
say "building $IMAGE on $ROOTFS"
start=$SECONDS
docker buildx build --progress=plain --build-arg "ROOTFS=$ROOTFS" "${secret[@]}" \
    --label "llm-service.stand-in.key=$key" --label "org.opencontainers.image.base.name=$ROOTFS" \
    --tag "$IMAGE" "$context" >&2
say "built $IMAGE in $((SECONDS - start))s ($(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}'))"
echo "$IMAGE"
