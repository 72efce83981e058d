# Sourced by the bench scripts: the checks they start with and the binary
# they measure.

# Exits unless running as root; $1 names the script, $2 says why.
need_root() {
  [ "$(id -u)" = 0 ] || { echo "$1 needs root${2:+ ($2)}" >&2; exit 2; }
}

# Exits unless every program after $1 (the script's name) is installed.
need() {
  local script=$1; shift
  for t in "$@"; do
    command -v "$t" >/dev/null || { echo "$script needs $t" >&2; exit 2; }
  done
}

# The cairn to measure: CAIRN_BIN, or a release build of this checkout.
cairn_bin() {
  if [ -n "${CAIRN_BIN:-}" ]; then
    echo "$CAIRN_BIN"
  else
    cargo build --release -q -p cairn-cli >&2
    echo "${CARGO_TARGET_DIR:-$PWD/target}/release/cairn"
  fi
}
