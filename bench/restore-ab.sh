#!/usr/bin/env bash
# Two or more builds of Cairn (and restic) restoring the same repository, as
# alternating rounds: for comparing a change against the build before it,
# where `restore.sh` compares one build against restic. Each restore goes
# into a fresh ext4 on a loop device writing to its backing file with
# direct I/O, page cache dropped before it, as in `restore.sh`; prints one
# line per restore (name, then GNU time's wall s, user s, sys s, peak RSS
# KiB) and, at the end, each name's restores sorted by wall time with the
# median (the lower of the middle two for an even count). Nothing is written under bench/: the figures it gives are for
# deciding, not for the README.
#   bench/restore-ab.sh ROUNDS NAME=BIN[:PATH] ...   (root, GNU time)
# BIN is a cairn binary restoring REPO's latest snapshot (PATH inside it:
# `latest:PATH`), or `restic` restoring RESTIC_REPO's latest. REPO and
# RESTIC_REPO default to the repositories `restore.sh` leaves behind in
# /tmp/bench/restore (the last size it ran); both passwords are "bench".
# DISK sets the loop disk's size (default 8000M).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
need_root restore-ab.sh "it mounts a fresh filesystem for every restore"
need restore-ab.sh /usr/bin/time mkfs.ext4 losetup
[ $# -ge 2 ] || { echo "usage: bench/restore-ab.sh ROUNDS NAME=BIN[:PATH] ..." >&2; exit 2; }
rounds=$1
shift
repo=${REPO:-/tmp/bench/restore/cairn-repo}
restic_repo=${RESTIC_REPO:-/tmp/bench/restore/restic-repo}
w=/tmp/bench/restore-ab
mkdir -p "$w/mnt"
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench
trap 'drop_loop_disk "$w/disk.img" "$w/mnt"' EXIT
: >"$w/times"
for _ in $(seq "$rounds"); do
  for v in "$@"; do
    name=${v%%=*}
    rest=${v#*=}
    bin=${rest%%:*}
    spec=latest
    [[ $rest == *:* ]] && spec=latest:${rest#*:}
    if [ "$bin" = restic ]; then
      cmd=(restic restore --repo "$restic_repo" latest --target "$w/mnt")
    else
      cmd=("$bin" restore --repo "$repo" "$spec" "$w/mnt")
    fi
    loop_disk "$w/disk.img" "${DISK:-8000M}" "$w/mnt" on
    sync
    echo 3 >/proc/sys/vm/drop_caches
    if ! /usr/bin/time -f "%e %U %S %M" -o "$w/t" "${cmd[@]}" >/dev/null 2>"$w/log"; then
      echo "$name failed:" >&2
      tail -3 "$w/log" >&2
      exit 1
    fi
    echo "$name $(cat "$w/t")" | tee -a "$w/times"
  done
done
echo "sorted by wall time, median marked:"
for v in "$@"; do
  name=${v%%=*}
  awk -v n="$name" '$1 == n { print $2 }' "$w/times" | sort -n |
    awk -v n="$name" '{ a[NR] = $1 } END {
      m = a[int((NR + 1) / 2)]; line = n ":";
      for (i = 1; i <= NR; i++) line = line " " a[i];
      print line "  (median " m ")" }'
done
