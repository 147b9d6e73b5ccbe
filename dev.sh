#!/usr/bin/env bash
# Set up and run the project from a fresh checkout.
#   bash dev.sh test    venv + install + redis-server, then ruff, mypy, the whole test suite
#                       and the docs site (mkdocs build --strict)
#   bash dev.sh docs    the docs site check alone (mkdocs build --strict), in the existing venv
#   bash dev.sh demo    venv + install, then the live demo (embedded Redis when none is reachable)
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".[$1]"
}

ensure_redis_server() {
  if command -v redis-server >/dev/null 2>&1; then
    return
  fi
  echo "dev.sh: redis-server is missing; installing it with apt-get" >&2
  local sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  if command -v apt-get >/dev/null 2>&1 && $sudo apt-get update -qq \
      && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; then
    return
  fi
  echo "dev.sh: could not install redis-server: real-server tests will be SKIPPED" >&2
  if [ "${CI:-}" = "true" ]; then
    echo "dev.sh: CI=true requires redis-server" >&2
    exit 1
  fi
}

# The docs site, built strictly: any warning (a dead link, a missing anchor, an unknown name in
# the API reference) fails the build. Its output is not quieted: --quiet would hide the
# warnings, and with them the failure.
check_docs() {
  NO_MKDOCS_2_WARNING=1 "$VENV/bin/mkdocs" build --strict --site-dir "$VENV/docs-site"
}

case "${1:-}" in
  test)
    shift
    setup dev
    ensure_redis_server
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    "$VENV/bin/mypy"
    "$VENV/bin/python" -m pytest "$@"
    check_docs
    ;;
  docs)
    check_docs
    ;;
  demo)
    shift
    setup demo
    "$VENV/bin/redis-telemetry" demo "$@"
    ;;
  *)
    echo "usage: bash dev.sh test [pytest args] | bash dev.sh docs | bash dev.sh demo [demo args]" >&2
    exit 2
    ;;
esac
