#!/usr/bin/env bash
# Make this checkout runnable on a fresh Debian/Ubuntu machine: system packages (when root),
# the virtualenv, and the pinned Python packages. Idempotent and quiet when nothing is missing.
#
#   scripts/bootstrap.sh runtime   # requirements.txt
#   scripts/bootstrap.sh stack     # requirements.txt + Debian's prometheus and alertmanager (make run)
#   scripts/bootstrap.sh dev       # requirements-dev.txt + the same packages, nginx, and Docker's engine
#                                  # with mmdebstrap (tests)
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-runtime}"
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

apt_install() {
    if [ "$(id -u)" != 0 ]; then
        echo "bootstrap: missing system packages: $*; install them with: sudo apt-get install -y $*" >&2
        exit 1
    fi
    echo "bootstrap: installing system packages: $*"
    export DEBIAN_FRONTEND=noninteractive
    # a fresh machine has no package lists
    if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)" ]; then
        apt-get update -qq
    fi
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
}

if ! command -v "$PYTHON" >/dev/null; then
    apt_install python3 python3-venv
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "bootstrap: $PYTHON is $("$PYTHON" -V 2>&1); Python 3.11 or newer is needed" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
        apt_install python3-venv
    fi
    echo "bootstrap: creating $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
fi

# model.train and model.onboard compile a tree ensemble into a shared library with gcc (model/compiled.py);
# without a compiler they still work, and the API serves the trees through scikit-learn
if ! command -v gcc >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt_install gcc libc6-dev
    else
        echo "bootstrap: no gcc: tree ensembles will not be compiled (sudo apt-get install -y gcc libc6-dev)" >&2
    fi
fi

# the local stack and the tests run the real Prometheus and Alertmanager from Debian's packages
if [ "$profile" = dev ] || [ "$profile" = stack ]; then
    missing=()
    command -v prometheus >/dev/null || missing+=(prometheus)
    command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
    # tests/test_gateway.py runs webapp/nginx.conf (the compose gateway) under Debian's nginx
    new_nginx=0
    if [ "$profile" = dev ] && [ ! -x /usr/sbin/nginx ]; then
        missing+=(nginx)
        new_nginx=1
    fi
    # tests/test_compose_stack.py brings the compose stack up in a Docker engine of its own, on
    # stand-in images built from a Debian rootfs (mmdebstrap); an engine already installed will do
    new_docker=0
    if [ "$profile" = dev ]; then
        if ! command -v dockerd >/dev/null; then
            missing+=(docker.io)
            new_docker=1
        fi
        command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
    # the package may start its default site on port 80 (systemd hosts; containers usually refuse):
    # the tests start their own nginx on free loopback ports and need none of it
    if [ "$new_nginx" = 1 ]; then
        if [ -d /run/systemd/system ]; then
            systemctl disable --now nginx >/dev/null 2>&1 || true
        elif [ -s /run/nginx.pid ]; then
            invoke-rc.d nginx stop >/dev/null 2>&1 || true
        fi
    fi
    # the same for the Docker daemon the package may start: the test starts and removes its own
    if [ "$new_docker" = 1 ]; then
        if [ -d /run/systemd/system ]; then
            systemctl disable --now docker.service docker.socket >/dev/null 2>&1 || true
        elif [ -s /run/docker.pid ]; then
            invoke-rc.d docker stop >/dev/null 2>&1 || true
        fi
    fi
fi

case "$profile" in
    runtime|stack) req=requirements.txt ;;
    dev) req=requirements-dev.txt ;;
    *) echo "bootstrap: unknown profile $profile (runtime|stack|dev)" >&2; exit 2 ;;
esac
# reinstall only when a requirements file changed since the last install
stamp="$VENV/.installed-$req"
if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ "$req" -nt "$stamp" ]; then
    echo "bootstrap: installing $req into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
    touch "$stamp"
fi
