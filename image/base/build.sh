#!/usr/bin/env bash
# Build the stand-in for AWS's Lambda Python base image from Debian's packages (no container registry
# needed), unless an image of the same inputs exists already. Prints the image's name on stdout.
#
#   image/base/build.sh [--force]
#
# STAND_IN_PLATFORM  the platform it is built for: linux/amd64 or linux/arm64 (default: this machine's).
#                 Another architecture than this machine's runs under emulation: Debian's
#                 qemu-user-static registers it with binfmt_misc (apt-get install qemu-user-static)
# STAND_IN_IMAGE  its name (default llm-service/lambda-python-stand-in:bookworm, with -<arch> appended
#                 for another architecture than this machine's, e.g. :bookworm-arm64); never the real tag
# DEBIAN_SUITE    the Debian release of its root file system (default bookworm: Python 3.11)
# DEBIAN_MIRROR   the Debian mirror (default http://deb.debian.org/debian)
# CA_BUNDLE       a PEM file of extra trusted CAs for pip inside the build, where TLS is re-signed
#                 (a corporate proxy); passed as a BuildKit secret, unused when empty (default)
#
# The root file system is made with mmdebstrap (installed with apt-get when missing, as root on Debian)
# and imported as llm-service/debian-rootfs:$DEBIAN_SUITE (:$DEBIAN_SUITE-<arch> for another architecture);
# image/base/Dockerfile adds the Lambda interface on top, with the Runtime Interface Emulator of the
# platform's architecture from the SAM CLI wheel in .venv-sam.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
SUITE="${DEBIAN_SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CA="${CA_BUNDLE:-}"
INCLUDE="python3,python3-venv,ca-certificates"
FORCE=0
[[ "${1:-}" == --force ]] && FORCE=1

say() { printf 'stand-in base: %s\n' "$*" >&2; }
fail() {
    printf 'stand-in base: ERROR: %s\n' "$*" >&2
    exit 1
}

# The platform: this machine's unless STAND_IN_PLATFORM names another (built and run under emulation).
case "$(uname -m)" in
x86_64 | amd64) host_arch=amd64 ;;
aarch64 | arm64) host_arch=arm64 ;;
*) fail "no Runtime Interface Emulator for machine type $(uname -m)" ;;
esac
PLATFORM="${STAND_IN_PLATFORM:-linux/$host_arch}"
case "$PLATFORM" in
linux/amd64) arch=amd64 rie_arch=x86_64 qemu=qemu-x86_64 ;;
linux/arm64 | linux/arm64/v8) arch=arm64 rie_arch=arm64 qemu=qemu-aarch64 ;;
*) fail "STAND_IN_PLATFORM=$PLATFORM: only linux/amd64 and linux/arm64 are built" ;;
esac
# The names without a suffix stay this machine's architecture's, as they always were.
suffix=""
[[ "$arch" == "$host_arch" ]] || suffix="-$arch"
IMAGE="${STAND_IN_IMAGE:-llm-service/lambda-python-stand-in:bookworm$suffix}"
ROOTFS="llm-service/debian-rootfs:$SUITE$suffix"
if [[ "$arch" != "$host_arch" ]]; then
    binfmt="/proc/sys/fs/binfmt_misc/$qemu"
    if [[ ! -f "$binfmt" ]] || [[ "$(head -n 1 "$binfmt")" != enabled ]]; then
        fail "$PLATFORM runs under emulation here, and $binfmt is not an enabled handler: apt-get install qemu-user-static (Debian), or register it with update-binfmts"
    fi
    say "$PLATFORM on a $host_arch machine: under emulation ($qemu)"
fi

case "$IMAGE" in
public.ecr.aws/lambda/* | amazon/aws-lambda-* | */lambda/python:*)
    fail "STAND_IN_IMAGE=$IMAGE looks like AWS's image name; give the stand-in a name of its own" ;;
esac
[[ -z "$CA" || -s "$CA" ]] || fail "CA_BUNDLE=$CA is not a readable, non-empty file"
docker info >/dev/null 2>&1 || fail "no Docker engine answers (run scripts/docker/engine.sh)"

rie="$(ls "$REPO"/.venv-sam/lib/python3*/site-packages/samcli/local/rapid/aws-lambda-rie-"$rie_arch" 2>/dev/null | head -n 1 || true)"
[[ -n "$rie" ]] || fail "the SAM CLI's aws-lambda-rie-$rie_arch is not in .venv-sam (run make setup)"

label() { docker image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }

# The root file system: Debian's minimal base plus Python 3 and CA certificates.
rootfs_key="$SUITE $MIRROR $INCLUDE $arch"
if [[ "$FORCE" == 1 || "$(label "$ROOTFS" llm-service.rootfs.key)" != "$rootfs_key" ]]; then
    if ! command -v mmdebstrap >/dev/null 2>&1; then
        [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1 ||
            fail "mmdebstrap is missing and cannot be installed here (needs root on Debian): apt-get install mmdebstrap"
        say "installing mmdebstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >&2 ||
            fail "apt-get install mmdebstrap failed"
    fi
    say "making the $SUITE $arch root file system ($INCLUDE) from $MIRROR"
    start=$SECONDS
    # Standard output is the tarball; docker import reads it without a file in between.
    mmdebstrap --quiet --variant=minbase --architectures="$arch" --include="$INCLUDE" --components=main \
        "$SUITE" - "$MIRROR" |
        docker import --platform "$PLATFORM" --change "LABEL llm-service.rootfs.key=\"$rootfs_key\"" \
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
say "building $IMAGE ($PLATFORM) on $ROOTFS"
start=$SECONDS
docker buildx build --progress=plain --platform "$PLATFORM" --build-arg "ROOTFS=$ROOTFS" "${secret[@]}" \
    --label "llm-service.stand-in.key=$key" --label "org.opencontainers.image.base.name=$ROOTFS" \
    --tag "$IMAGE" "$context" >&2
say "built $IMAGE in $((SECONDS - start))s ($(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}'))"
echo "$IMAGE"
