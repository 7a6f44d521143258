#!/usr/bin/env bash
# Builds and starts auth-broker on the embedded default: SQLite under ./data, the in-process
# vault, one org `default`, listening on 127.0.0.1:8080. Arguments go to `auth-broker serve`
# (e.g. `scripts/run.sh --listen 0.0.0.0:8080 --data-dir /var/lib/auth-broker`).
#
# On a fresh Debian machine, as root, it first installs what the build needs and is missing,
# saying what: the C libraries the SAML service provider links against (pkg-config,
# libssl-dev, libxml2-dev, libxmlsec1-dev, libclang-dev), a C compiler, and curl and jq (the
# README's quickstart uses them); a Rust toolchain (rustup, the version CI runs) when there is no `cargo`. Then `cargo build --release` (a few minutes the
# first time) and `exec auth-broker serve`, which prints the first start's credentials once.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'run.sh: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "need root to run: $*"
    exit 1
  fi
}

missing=()
command -v cc >/dev/null || missing+=(gcc libc6-dev)
command -v curl >/dev/null || missing+=(curl ca-certificates)
command -v jq >/dev/null || missing+=(jq)
for pkg in pkg-config libssl-dev libxml2-dev libxmlsec1-dev libclang-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing with apt-get: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# shellcheck source=lib/toolchain.sh
. scripts/lib/toolchain.sh
TOOLCHAIN_WHO=run.sh ensure_toolchain

say "building (cargo build --release)"
cargo build --release --locked
target="${CARGO_TARGET_DIR:-target}"
say "starting: auth-broker serve $*"
exec "$target/release/auth-broker" serve "$@"
