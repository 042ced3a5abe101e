#!/usr/bin/env bash
# Ensure a Docker engine for the image builds and `sam local`, and stop only what this script started.
#
#   scripts/docker/engine.sh [ensure]   use a working `docker info`; else install (Debian, root) and start one
#   scripts/docker/engine.sh status     say which engine `docker` reaches, and whether this script started it
#   scripts/docker/engine.sh stop       stop the dockerd this script started (nothing else)
#
# Where `docker info` already works, that engine is used as it is. Otherwise, as root on Debian, the
# packages docker.io and docker-buildx (BuildKit) are installed from Debian's trixie suite, pinned low so
# nothing else on the machine moves to trixie, and dockerd starts with a data root and a log file of its
# own under $DOCKER_ENGINE_DIR. Its process id and start time are recorded there, so `stop` stops exactly
# that process. Where neither works, the message says why and exits 1.
#
# DOCKER_ENGINE_DIR   state folder (default /var/lib/llm-service-docker): data/, dockerd.log, dockerd.pid
# DOCKER_ENGINE_WAIT  seconds to wait for a started dockerd to answer (default 60)
set -euo pipefail

STATE_DIR="${DOCKER_ENGINE_DIR:-/var/lib/llm-service-docker}"
WAIT_S="${DOCKER_ENGINE_WAIT:-60}"
PID_FILE="$STATE_DIR/dockerd.pid"       # "<pid> <start time in clock ticks>" of the dockerd started here
DAEMON_PID_FILE="$STATE_DIR/dockerd.daemon.pid"  # dockerd's own --pidfile
LOG_FILE="$STATE_DIR/dockerd.log"
INSTALLED_FILE="$STATE_DIR/installed"   # what this script installed (packages, apt files), for the record
SUITE=trixie
APT_SOURCE=/etc/apt/sources.list.d/llm-service-docker-trixie.sources
APT_PIN=/etc/apt/preferences.d/llm-service-docker-trixie
PACKAGES=(docker.io docker-buildx)

say() { printf 'docker-engine: %s\n' "$*" >&2; }
fail() {
    printf 'docker-engine: ERROR: %s\n' "$*" >&2
    exit 1
}

# `docker info` answers: prints the server's version, storage driver and root folder.
engine_answers() {
    command -v docker >/dev/null 2>&1 || return 1
    timeout 20 docker info --format '{{.ServerVersion}}' >/dev/null 2>&1
}

describe_engine() {
    docker info --format 'server {{.ServerVersion}}, storage driver {{.Driver}}, data root {{.DockerRootDir}}, cgroup {{.CgroupVersion}}' 2>/dev/null || true
}

docker_info_error() {
    if ! command -v docker >/dev/null 2>&1; then
        echo "no docker command on PATH"
        return
    fi
    timeout 20 docker info --format '{{.ServerVersion}}' 2>&1 >/dev/null | head -n 3 | tr '\n' ' ' || true
}

# Start time of a process (field 22 of /proc/PID/stat), which tells it from a later process reusing its id.
start_time() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    # shellcheck disable=SC2086
    set -- $stat
    echo "${20}"
}

# The pid recorded by `ensure` when that very process still runs, else nothing.
started_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid started now
    read -r pid started <"$PID_FILE" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    now="$(start_time "$pid")" || return 1
    [[ "$now" == "$started" ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]] || return 1
    echo "$pid"
}

buildx_works() {
    timeout 20 docker buildx version >/dev/null 2>&1
}

install_engine() {
    [[ -r /etc/debian_version ]] && command -v apt-get >/dev/null 2>&1 ||
        fail "no working Docker engine ($(docker_info_error)), and this is not Debian, so none can be installed here: install Docker 23+ with buildx (BuildKit) and start it, then run this again"
    [[ "$(id -u)" == 0 ]] ||
        fail "no working Docker engine ($(docker_info_error)), and installing one needs root: run this script as root, or install Docker 23+ with buildx and start it"
    local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [[ -r "$keyring" ]] || fail "no $keyring (package debian-archive-keyring) to verify Debian's $SUITE suite with"
    say "installing ${PACKAGES[*]} from Debian $SUITE (pinned to priority 100: nothing else upgrades to $SUITE)"
    mkdir -p "$STATE_DIR"
    if [[ ! -f "$APT_SOURCE" ]]; then
        cat >"$APT_SOURCE" <<EOF
# Added by llm-service's scripts/docker/engine.sh: docker.io and docker-buildx only (see $APT_PIN).
Types: deb
URIs: http://deb.debian.org/debian
Suites: $SUITE
Components: main
Signed-By: $keyring
EOF
        echo "apt source $APT_SOURCE" >>"$INSTALLED_FILE"
    fi
    if [[ ! -f "$APT_PIN" ]]; then
        cat >"$APT_PIN" <<EOF
# Added by llm-service's scripts/docker/engine.sh: $SUITE only where asked for by name.
Package: *
Pin: release n=$SUITE
Pin-Priority: 100
EOF
        echo "apt pin $APT_PIN" >>"$INSTALLED_FILE"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq ||
        fail "apt-get update failed (is Debian's package mirror reachable?)"
    local targets=()
    local package
    for package in "${PACKAGES[@]}"; do targets+=("$package/$SUITE"); done
    # pkg/suite takes those packages, and only the dependencies that bookworm cannot satisfy, from trixie.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${targets[@]}" >&2 ||
        fail "apt-get install ${targets[*]} failed"
    echo "packages: $(dpkg-query -W -f '${Package} ${Version}\n' "${PACKAGES[@]}" | paste -sd ',' | sed 's/,/, /g')" >>"$INSTALLED_FILE"
}

start_engine() {
    local dockerd
    dockerd="$(command -v dockerd || true)"
    [[ -n "$dockerd" ]] || fail "dockerd not found after installing ${PACKAGES[*]}"
    mkdir -p "$STATE_DIR/data"
    rm -f "$DAEMON_PID_FILE"
    say "starting dockerd (data root $STATE_DIR/data, log $LOG_FILE)"
    # A session of its own, so that it outlives this shell and a Ctrl-C in it; dockerd starts its own
    # containerd (and replaces a stale /var/run/docker.sock).
    setsid "$dockerd" \
        --data-root "$STATE_DIR/data" \
        --pidfile "$DAEMON_PID_FILE" \
        --host unix:///var/run/docker.sock \
        </dev/null >>"$LOG_FILE" 2>&1 &
    local pid=$!
    local waited=0
    until engine_answers; do
        if ! kill -0 "$pid" 2>/dev/null; then
            fail "dockerd exited; the end of its log $LOG_FILE:
$(tail -n 20 "$LOG_FILE")"
        fi
        if ((waited >= WAIT_S)); then
            fail "dockerd (pid $pid) does not answer after ${WAIT_S}s; the end of its log $LOG_FILE:
$(tail -n 20 "$LOG_FILE")"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    # dockerd's own pid file names the daemon itself, should setsid have forked.
    if [[ -s "$DAEMON_PID_FILE" ]]; then pid="$(tr -dc 0-9 <"$DAEMON_PID_FILE")"; fi
    local started
    started="$(start_time "$pid")" || fail "dockerd (pid $pid) answered, then exited; log $LOG_FILE"
    echo "$pid $started" >"$PID_FILE"
    say "dockerd started (pid $pid) after ${waited}s: $(describe_engine)"
}

ensure() {
    if engine_answers; then
        local pid
        if pid="$(started_pid)"; then
            say "using the dockerd this script started (pid $pid): $(describe_engine)"
        else
            say "using the running Docker engine: $(describe_engine)"
        fi
        buildx_works || fail "the Docker engine answers, but \`docker buildx\` does not (the Dockerfile needs BuildKit): install the buildx plugin (Debian: docker-buildx)"
        return 0
    fi
    say "no working Docker engine: $(docker_info_error)"
    if ! command -v dockerd >/dev/null 2>&1 || ! buildx_works; then
        install_engine
    fi
    start_engine
    buildx_works || fail "dockerd runs, but \`docker buildx\` does not answer: install the buildx plugin (Debian: docker-buildx)"
}

stop() {
    local pid
    if ! pid="$(started_pid)"; then
        rm -f "$PID_FILE"
        say "no dockerd started by this script is running (nothing stopped)"
        return 0
    fi
    say "stopping dockerd (pid $pid)"
    kill -TERM "$pid"
    local waited=0
    while kill -0 "$pid" 2>/dev/null; do
        if ((waited >= 30)); then
            say "dockerd (pid $pid) still runs after 30s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 1
        waited=$((waited + 1))
    done
    rm -f "$PID_FILE"
    say "stopped"
}

status() {
    local pid
    if engine_answers; then
        echo "engine: $(describe_engine)"
    else
        echo "engine: none answers ($(docker_info_error))"
    fi
    if pid="$(started_pid)"; then
        echo "started by this script: dockerd pid $pid (data root $STATE_DIR/data, log $LOG_FILE)"
    else
        echo "started by this script: nothing running"
    fi
    if [[ -f "$INSTALLED_FILE" ]]; then
        echo "installed by this script:"
        sed 's/^/  /' "$INSTALLED_FILE"
    fi
}

case "${1:-ensure}" in
ensure) ensure ;;
stop) stop ;;
status) status ;;
-h | --help | help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' ;;
*) fail "unknown command '$1' (ensure, status or stop)" ;;
esac
