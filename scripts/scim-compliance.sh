#!/usr/bin/env bash
# SCIM 2.0 compliance check of a live broker with scim2-tester, on each storage back end.
#
# Usage:
#   scripts/scim-compliance.sh [sqlite] [postgres] [postgres-redis]
#                                                    run against the named back ends (default: all)
#   scripts/scim-compliance.sh --setup               only prepare the Python venv, then print the
#                                                    checker command on stdout (nothing else goes there)
#
# For each back end it starts `auth-broker serve` on a free loopback port with a fresh data
# directory and a random AUTH_BROKER_BOOTSTRAP_SCIM_TOKEN, waits for /readyz, runs the checker
# against http://127.0.0.1:<port>/scim/v2/default, and stops the broker. `sqlite` is the
# embedded default (SQLite, in-process vault); `postgres` sets AUTH_BROKER__STORAGE__DATABASE_URL
# to a database created for the run and dropped afterwards; `postgres-redis` does the same and
# puts the token vault in Redis (AUTH_BROKER__STORAGE__REDIS_URL, with a random vault key), the
# production layout. Any ERROR or CRITICAL result fails the run (exit 1).
#
# Environment (all optional):
#   AUTH_BROKER_SCIM_CHECK   checker command, called as `$AUTH_BROKER_SCIM_CHECK URL TOKEN`;
#                            default: scripts/scim_check.py in the venv below (created if missing)
#   AUTH_BROKER_VENV         venv for the checker (default ~/.cache/auth-broker-venv)
#   AUTH_BROKER_BIN          broker binary; default: `cargo build`, then target/debug/auth-broker
#   AUTH_BROKER_COMPLIANCE_PG  PostgreSQL server to create the scratch database on
#                            (default postgres://postgres@127.0.0.1:5432; needs CREATEDB)
#   AUTH_BROKER_COMPLIANCE_REDIS  Redis for `postgres-redis`; default redis://127.0.0.1:6379/9,
#                            a database index of its own that is emptied after the run
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${AUTH_BROKER_VENV:-$HOME/.cache/auth-broker-venv}"
PG_SERVER="${AUTH_BROKER_COMPLIANCE_PG:-postgres://postgres@127.0.0.1:5432}"
PG_SERVER="${PG_SERVER%/}"
DEFAULT_REDIS_URL="redis://127.0.0.1:6379/9"
REDIS_URL="${AUTH_BROKER_COMPLIANCE_REDIS:-$DEFAULT_REDIS_URL}"
ORG=default
# Pinned so that a new checker release cannot change the verdict on unchanged code; bump on purpose.
CHECKER_PACKAGES=(scim2-tester==0.5.2 scim2-client==0.13.2 scim2-models==0.12.3 httpx2==2.16.2)

log() { printf 'scim-compliance: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# Creates (or reuses) the venv and installs the pinned checker; prints the checker command.
setup_venv() {
  command -v python3 >/dev/null || die "python3 is required"
  if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    log "creating venv $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV" >&2
  fi
  # A no-op without network access when the pinned versions are already installed.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${CHECKER_PACKAGES[@]}" >&2
  "$VENV/bin/python" -c 'import httpx2, scim2_client.engines.httpx2, scim2_tester' >&2
  printf '%s\n' "$VENV/bin/python $ROOT/scripts/scim_check.py"
}

if [ "${1:-}" = "--setup" ]; then
  setup_venv
  exit 0
fi

backends=("$@")
[ ${#backends[@]} -gt 0 ] || backends=(sqlite postgres postgres-redis)
for b in "${backends[@]}"; do
  case "$b" in
    sqlite | postgres | postgres-redis) ;;
    *) die "unknown back end '$b' (expected sqlite, postgres or postgres-redis)" ;;
  esac
done

command -v curl >/dev/null || die "curl is required"
if [ -z "${AUTH_BROKER_SCIM_CHECK:-}" ]; then
  AUTH_BROKER_SCIM_CHECK="$(setup_venv)"
fi
read -r -a CHECK_CMD <<<"$AUTH_BROKER_SCIM_CHECK"

# shellcheck source=lib/broker-bin.sh
. "$ROOT/scripts/lib/broker-bin.sh"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/auth-broker-scim.XXXXXX")"
BROKER_PID=""
SCRATCH_DB=""

stop_broker() {
  [ -n "$BROKER_PID" ] || return 0
  local pid="$BROKER_PID" rc=0 i
  BROKER_PID=""
  kill -TERM "$pid" 2>/dev/null || true
  # Graceful shutdown gets server.shutdown_grace_secs (20 s by default), then it is killed.
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "broker $pid did not stop within 25 s of SIGTERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || rc=$?
  [ "$rc" -eq 0 ] || log "warning: broker exited with status $rc after SIGTERM"
}

drop_scratch_db() {
  [ -n "$SCRATCH_DB" ] || return 0
  psql "$PG_SERVER/postgres" -w -q -v ON_ERROR_STOP=1 \
    -c "DROP DATABASE IF EXISTS \"$SCRATCH_DB\" WITH (FORCE)" >/dev/null ||
    log "warning: could not drop database $SCRATCH_DB"
  SCRATCH_DB=""
}

# Empties the scratch Redis database, only when it is the default one this script owns.
flush_scratch_redis() {
  if [ "$REDIS_URL" = "$DEFAULT_REDIS_URL" ] && command -v redis-cli >/dev/null; then
    redis-cli -u "$REDIS_URL" flushdb >/dev/null 2>&1 || log "warning: could not empty $REDIS_URL"
  fi
}

cleanup() {
  stop_broker
  drop_scratch_db
  flush_scratch_redis
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

random_token() {
  python3 -c 'import secrets; print(secrets.token_urlsafe(32))'
}

random_vault_key() {
  python3 -c 'import base64, secrets; print(base64.b64encode(secrets.token_bytes(32)).decode())'
}

# start_broker DIR TOKEN [VAR=VALUE...]: starts the broker in a clean environment (no config
# file, no inherited AUTH_BROKER_* settings), sets PORT and BROKER_PID, waits for /readyz.
start_broker() {
  local dir="$1" token="$2" attempt i
  shift 2
  mkdir -p "$dir"
  for attempt in 1 2 3; do
    PORT="$(free_port)"
    (
      cd "$dir" # keeps a developer's config/auth-broker.toml out of the run
      while IFS= read -r v; do
        case "$v" in AUTH_BROKER_*) unset "$v" ;; esac
      done < <(compgen -e)
      export AUTH_BROKER_BOOTSTRAP_SCIM_TOKEN="$token"
      for kv in "$@"; do export "${kv?}"; done
      exec "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$dir/data"
    ) >"$dir/broker.log" 2>&1 &
    BROKER_PID=$!
    for i in $(seq 1 240); do
      if ! kill -0 "$BROKER_PID" 2>/dev/null; then
        break
      fi
      if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/readyz" 2>/dev/null; then
        return 0
      fi
      sleep 0.25
    done
    if kill -0 "$BROKER_PID" 2>/dev/null; then
      log "broker not ready after 60 s; its log:"
      sed 's/^/  | /' "$dir/broker.log" >&2
      stop_broker
      return 1
    fi
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=""
    if grep -q 'cannot bind' "$dir/broker.log"; then
      log "port $PORT was taken; trying another"
      continue
    fi
    log "broker exited during start-up; its log:"
    sed 's/^/  | /' "$dir/broker.log" >&2
    return 1
  done
  return 1
}

# run_backend NAME: one full run; prints the checker's output and adds a line to RESULTS.
# Called as `run_backend … || failed=1`, where errexit is off: every step checks its status.
run_backend() {
  local name="$1" dir="$WORK/$1" token started rc=0 summary
  local -a env=()
  token="$(random_token)"
  started=$SECONDS
  if [ "$name" != sqlite ]; then
    command -v psql >/dev/null || die "psql is required for the postgres back end"
    SCRATCH_DB="ab_scim_$(date +%s)_$$"
    if ! psql "$PG_SERVER/postgres" -w -q -v ON_ERROR_STOP=1 \
      -c "CREATE DATABASE \"$SCRATCH_DB\"" >/dev/null; then
      SCRATCH_DB=""
      RESULTS+=("$name: FAILED (cannot create a database on $PG_SERVER)")
      return 1
    fi
    env+=("AUTH_BROKER__STORAGE__DATABASE_URL=$PG_SERVER/$SCRATCH_DB")
  fi
  if [ "$name" = postgres-redis ]; then
    env+=(
      "AUTH_BROKER__STORAGE__REDIS_URL=$REDIS_URL"
      "AUTH_BROKER__VAULT__ACTIVE_KEY=compliance"
      "AUTH_BROKER__VAULT__KEYS__COMPLIANCE__ENV=AUTH_BROKER_COMPLIANCE_VAULT_KEY"
      "AUTH_BROKER_COMPLIANCE_VAULT_KEY=$(random_vault_key)"
    )
  fi
  log "$name: starting the broker"
  start_broker "$dir" "$token" ${env[@]+"${env[@]}"} || {
    drop_scratch_db
    RESULTS+=("$name: FAILED (the broker did not start)")
    return 1
  }
  local url="http://127.0.0.1:$PORT/scim/v2/$ORG"
  log "$name: running scim2-tester against $url"
  "${CHECK_CMD[@]}" "$url" "$token" >"$dir/check.out" 2>&1 || rc=$?
  sed "s/^/[$name] /" "$dir/check.out"
  stop_broker
  drop_scratch_db
  summary="$(tail -n 1 "$dir/check.out")"
  if [ "$rc" -eq 0 ]; then
    RESULTS+=("$name: passed $summary ($((SECONDS - started)) s)")
  else
    RESULTS+=("$name: FAILED $summary ($((SECONDS - started)) s)")
    if grep -qiE 'panick|"level":"ERROR"' "$dir/broker.log"; then
      log "$name: the broker logged errors:"
      grep -iE 'panick|"level":"ERROR"' "$dir/broker.log" | head -n 20 | sed 's/^/  | /' >&2
    fi
  fi
  return "$rc"
}

RESULTS=()
failed=0
for b in "${backends[@]}"; do
  run_backend "$b" || failed=1
done

echo "scim-compliance summary:"
for r in "${RESULTS[@]}"; do echo "  $r"; done
exit "$failed"
