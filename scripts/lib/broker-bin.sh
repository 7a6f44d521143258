# Sourced by the check scripts: sets BIN to the broker binary they run against, either
# $AUTH_BROKER_BIN or a debug build of the tree at $ROOT (honouring CARGO_TARGET_DIR). Needs the
# caller's `log` and `die`.
if [ -n "${AUTH_BROKER_BIN:-}" ]; then
  BIN="$AUTH_BROKER_BIN"
else
  log "building the broker (debug)"
  (cd "$ROOT" && cargo build --quiet --bin auth-broker)
  target_dir="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
  BIN="$target_dir/debug/auth-broker"
fi
[ -x "$BIN" ] || die "no broker binary at $BIN"
