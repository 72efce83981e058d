#!/usr/bin/env bash
# What a buffered write costs the kernel by how long ago the memory it
# lands in was freed. On a VM that hands freed memory back to its host,
# page-cache pages taken from memory freed seconds ago fault through to
# the host; pages freed a moment before do not. A restore writing through
# the page cache pays this per page, so its system time depends on what
# ran before it. Writes 3 GB into a fresh ext4 on a loop device (direct
# I/O to its backing file, as `restore.sh` uses), drops the page cache,
# waits 0, 1, 2, 4 and 8 s, then writes three files of 1 GB in turn; prints
# wall and system seconds of each write and writes fresh-pages-results.md.
#   bench/fresh-pages.sh   (root, python3, mkfs.ext4, losetup)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
need_root fresh-pages.sh "it mounts a fresh filesystem and drops the page cache"
need fresh-pages.sh python3 mkfs.ext4 losetup
w=/tmp/bench/fresh-pages
mkdir -p "$w/mnt"
trap 'drop_loop_disk "$w/disk.img" "$w/mnt"' EXIT
loop_disk "$w/disk.img" 8000M "$w/mnt" on
out=$(python3 - "$w/mnt" <<'PY'
import os, sys, time
d = sys.argv[1]
buf = os.urandom(256 << 10)
def write(name, gb=1):
    fd = os.open(f"{d}/{name}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    t, w0 = os.times(), time.time()
    for _ in range((gb << 30) // len(buf)):
        os.write(fd, buf)
    u = os.times()
    os.close(fd)
    return f"{time.time() - w0:.2f} / {u.system - t.system:.2f}"
def drop():
    os.system("sync; echo 3 > /proc/sys/vm/drop_caches")
for wait in [0, 1, 2, 4, 8]:
    write("before", 3)
    drop()
    time.sleep(wait)
    print(f"| {wait} | " + " | ".join(write(n) for n in ["first", "second", "third"]) + " |", flush=True)
    drop()
PY
)
echo "$out"
{
  echo "# Buffered writes into freshly freed memory"
  echo
  echo "\`bench/fresh-pages.sh\`: 3 GB written into a fresh ext4 on a loop device, the page cache dropped, a wait, then three files of 1 GB written in turn (writes of 256 KiB). Wall / system seconds of each 1 GB write."
  echo
  echo "| wait s | first GB | second GB | third GB |"
  echo "|---|---|---|---|"
  echo "$out"
} >"$here/fresh-pages-results.md"
