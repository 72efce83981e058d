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

# A fresh ext4 of SIZE on a loop device over IMG, mounted at MNT; the loop
# device writes to IMG with direct I/O (as a disk would) unless DIRECT is
# off: then the kernel copies every byte a second time, into IMG's page
# cache.
#   loop_disk IMG SIZE MNT [on|off]
loop_disk() {
  drop_loop_disk "$1" "$3"
  truncate -s "$2" "$1"
  local dev
  dev=$(losetup -f --show --direct-io="${4:-on}" "$1")
  mkfs.ext4 -q -F "$dev"
  mount "$dev" "$3"
}

# Unmounts MNT, detaches every loop device over IMG and removes IMG.
#   drop_loop_disk IMG MNT
drop_loop_disk() {
  umount "$2" 2>/dev/null || true
  local d
  for d in $(losetup -j "$1" -O NAME -n 2>/dev/null); do losetup -d "$d"; done
  rm -f "$1"
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
