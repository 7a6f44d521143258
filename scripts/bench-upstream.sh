#!/usr/bin/env bash
# Upstream mint and refresh throughput (benches/upstream.rs): the broker against the same
# authorization server (oidc-provider, tests/peers/oidc/upstream.mjs) called directly by a
# minimal client in the same run; prints one RESULT line per phase with the ratio.
#
# Usage: scripts/bench-upstream.sh
#   AUTH_BROKER__STORAGE__DATABASE_URL / AUTH_BROKER__STORAGE__REDIS_URL: run the broker on
#   PostgreSQL and Redis instead of the embedded default (SQLite, in-process vault).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
if [ ! -d tests/peers/oidc/node_modules/oidc-provider ]; then
  echo "bench-upstream: installing the upstream peer (npm ci --prefix tests/peers/oidc)" >&2
  npm ci --prefix tests/peers/oidc --no-audit --no-fund >/dev/null
fi
if [ -x "$HOME/.cache/auth-broker-node/bin/node" ]; then
  PATH="$HOME/.cache/auth-broker-node/bin:$PATH"
fi
exec cargo bench --bench upstream
