# Sourced by scripts/run.sh and scripts/test.sh: makes sure `cargo` (with rustfmt and clippy
# when TOOLCHAIN_COMPONENTS names them) is on PATH, installing Rust with rustup when missing.
#
# rustup-init is fetched from static.rust-lang.org, where rustup's own install script fetches
# it from (the script's host, sh.rustup.rs, is not reachable from every network that reaches
# the toolchain). The toolchain is the one CI runs (AUTH_BROKER_RUST_TOOLCHAIN to change), so
# a new compiler's lints cannot fail a fresh machine's clippy on unchanged code.
AUTH_BROKER_RUST_TOOLCHAIN="${AUTH_BROKER_RUST_TOOLCHAIN:-1.95.0}"

toolchain_say() { printf '%s: %s\n' "${TOOLCHAIN_WHO:-toolchain}" "$*" >&2; }

ensure_toolchain() {
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  if ! command -v cargo >/dev/null; then
    command -v curl >/dev/null || {
      toolchain_say "curl is needed to install Rust"
      return 1
    }
    local arch dir init
    arch="$(uname -m)-unknown-linux-gnu"
    # rustup-init reads what to do from its own file name: it must be called rustup-init.
    dir="$(mktemp -d)"
    init="$dir/rustup-init"
    toolchain_say "installing Rust $AUTH_BROKER_RUST_TOOLCHAIN (rustup, minimal profile${TOOLCHAIN_COMPONENTS:+, $TOOLCHAIN_COMPONENTS}) into $HOME/.cargo"
    curl --proto '=https' --tlsv1.2 -sSfL -o "$init" \
      "https://static.rust-lang.org/rustup/dist/$arch/rustup-init"
    chmod +x "$init"
    local -a components=()
    local c
    for c in ${TOOLCHAIN_COMPONENTS:-}; do components+=(--component "$c"); done
    "$init" -y --no-modify-path --profile minimal \
      --default-toolchain "$AUTH_BROKER_RUST_TOOLCHAIN" ${components[@]+"${components[@]}"} >&2
    rm -rf "$dir"
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  # A toolchain without a component this run needs (the minimal profile has neither).
  for c in ${TOOLCHAIN_COMPONENTS:-}; do
    if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1 && command -v rustup >/dev/null; then
      toolchain_say "adding the $c component (rustup)"
      rustup component add "$c" >&2
    fi
  done
}
