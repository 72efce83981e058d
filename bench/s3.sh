#!/usr/bin/env bash
# Repositories on S3 against restic's S3 backend and rclone, on Garage on
# loopback, in one run:
#   - Cairn's initial backup into a local directory (the reference);
#   - on a single-node Garage and on a 3-node cluster (replication 3):
#     Cairn and restic backing up to S3, then restoring from it;
#   - on the single node: copying the local Cairn repository into a bucket
#     with `rclone copy` (the directory as files), `cairn copy` to a
#     replica (the same keys: records as they are), and `cairn copy
#     --reencrypt` into another owner's repository with its put-only key.
# Wall time, peak client RSS and CPU (GNU time) of each step, and the CPU
# the store's processes used meanwhile; page cache warm.
# Restores run into a fresh ext4 filesystem each (a loop-mounted image,
# when run as root; else a directory on the disk), and again into a tmpfs.
#   apt-get install -y restic rclone time
#   cargo install garage --locked --no-default-features --features bundled-libs,lmdb
#   bench/s3.sh [CORPUS]   # default /tmp/bench/corpus-3g (the 3 GiB mixed corpus, made if absent)
# Writes bench/s3-results.md and bench/s3-raw/. Never run while something else builds.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
corpus=${1:-/tmp/bench/corpus-3g}
work=/tmp/bench/s3
cargo build --release -q
cairn=$here/target/release/cairn
for t in restic rclone; do command -v $t >/dev/null || { echo "needs $t: apt-get install -y $t"; exit 1; }; done
[ -x /usr/bin/time ] || { echo "needs GNU time: apt-get install -y time"; exit 1; }
[ -d "$corpus" ] || "$here/bench/make-corpus.sh" "$corpus" 3GiB
bytes=$(du -sb "$corpus" | cut -f1)
rm -rf "$work"; mkdir -p "$work"
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench
export HOME=$work/home XDG_CACHE_HOME=$work/home/.cache XDG_CONFIG_HOME=$work/home/.config XDG_DATA_HOME=$work/home/.local/share
mkdir -p "$HOME"

# As root, each restore gets a fresh filesystem (see fresh_target).
loopfs=no
if [ "$(id -u)" = 0 ] && command -v mkfs.ext4 >/dev/null; then loopfs=yes; fi

pids=
cleanup() {
  [ -n "$pids" ] && kill $pids 2>/dev/null || true
  mountpoint -q "$work/restore" 2>/dev/null && umount "$work/restore" || true
  rm -f "$work/restore.img"
}
trap cleanup EXIT

# An empty ext4 at $work/restore for the next restore. A directory emptied
# with rm -rf is not the same: on an ext4 without a journal, files created
# within minutes of a mass delete make the kernel skip the freed inodes
# one by one (several CPU-seconds, varying from run to run).
fresh_target() {
  if mountpoint -q "$work/restore" 2>/dev/null; then umount "$work/restore"; fi
  rm -rf "$work/restore" "$work/restore.img"
  mkdir -p "$work/restore"
  if [ "$loopfs" = yes ]; then
    truncate -s $((bytes * 2)) "$work/restore.img"
    mkfs.ext4 -q -F "$work/restore.img"
    mount -o loop "$work/restore.img" "$work/restore"
  fi
  sync
}

# CPU time (clock ticks) the store's processes have used so far.
store_ticks() {
  local t=0 p
  for p in $pids; do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo $t
}
# timed NAME CMD...: wall seconds, max RSS (KiB), the client's and the
# store's CPU seconds appended to $work/times. On two shared cores the
# store's CPU bounds what the client can reach, so both are recorded.
timed() {
  local name=$1; shift
  local before after
  before=$(store_ticks)
  /usr/bin/time -v -o "$work/time.$name" "$@" > "$work/out.$name" 2>&1 || {
    echo "$name failed:"; tail -20 "$work/out.$name"; exit 1; }
  after=$(store_ticks)
  local wall rss cpu store
  wall=$(python3 - "$work/time.$name" <<'PY'
import sys
for l in open(sys.argv[1]):
    if "Elapsed (wall clock)" in l:
        t = l.rsplit(" ", 1)[1].strip().split(":")
        s = float(t[-1]) + 60 * float(t[-2]) + (3600 * float(t[-3]) if len(t) > 2 else 0)
        print(f"{s:.2f}")
PY
)
  rss=$(grep "Maximum resident" "$work/time.$name" | awk '{print $NF}')
  cpu=$(awk -F': ' '/User time|System time/ {s += $2} END {printf "%.2f", s}' "$work/time.$name")
  store=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t / hz}')
  echo "$name $wall $rss $cpu $store" >> "$work/times"
  echo "$name: $wall s, $((rss / 1024)) MiB, client $cpu CPU-s, store $store CPU-s"
}
: > "$work/times"

# The reference: a local repository.
"$cairn" init --repo "$work/local" >/dev/null 2>&1
sync; timed cairn-local "$cairn" --repo "$work/local" backup --no-progress "$corpus"

for nodes in 1 3; do
  "$here/bench/garage.sh" "$work/garage$nodes" "$nodes" bench copies
  # shellcheck disable=SC1090
  . "$work/garage$nodes/env"
  pids=$GARAGE_PIDS
  rm -rf "$XDG_CACHE_HOME"
  "$cairn" init --repo s3://bench/cairn >/dev/null 2>&1
  sync; timed "cairn-s3-$nodes" "$cairn" --repo s3://bench/cairn backup --no-progress "$corpus"
  restic -r "s3:$GARAGE_ENDPOINT/bench/restic" -o s3.region=garage init >/dev/null
  sync; timed "restic-s3-$nodes" restic -r "s3:$GARAGE_ENDPOINT/bench/restic" -o s3.region=garage backup -q "$corpus"
  fresh_target
  timed "cairn-restore-$nodes" "$cairn" --repo s3://bench/cairn restore --no-progress latest "$work/restore"
  python3 "$here/bench/verify-restore.py" "$corpus" "$work/restore$corpus" > "$work/verify-cairn-$nodes.txt" || {
    echo "Cairn's restore differs:"; head "$work/verify-cairn-$nodes.txt"; exit 1; }
  fresh_target
  timed "restic-restore-$nodes" restic -r "s3:$GARAGE_ENDPOINT/bench/restic" -o s3.region=garage restore -q latest --target "$work/restore"
  fresh_target
  # The same restores into memory: a tmpfs leaves the store, the network
  # and the client.
  shm=/dev/shm/cairn-s3-bench
  if [ "$(df --output=avail -B1 /dev/shm 2>/dev/null | tail -1)" -gt $((bytes * 2)) ] 2>/dev/null; then
    rm -rf "$shm"
    timed "cairn-restore-$nodes-tmpfs" "$cairn" --repo s3://bench/cairn restore --no-progress latest "$shm"
    python3 "$here/bench/verify-restore.py" "$corpus" "$shm$corpus" > "$work/verify-cairn-$nodes-tmpfs.txt" || {
      echo "Cairn's restore differs:"; head "$work/verify-cairn-$nodes-tmpfs.txt"; exit 1; }
    rm -rf "$shm"
    timed "restic-restore-$nodes-tmpfs" restic -r "s3:$GARAGE_ENDPOINT/bench/restic" -o s3.region=garage restore -q latest --target "$shm"
    rm -rf "$shm"
  fi
  if [ "$nodes" = 1 ]; then
    export RCLONE_CONFIG_G_TYPE=s3 RCLONE_CONFIG_G_PROVIDER=Other RCLONE_CONFIG_G_ENDPOINT=$GARAGE_ENDPOINT \
      RCLONE_CONFIG_G_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID RCLONE_CONFIG_G_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY \
      RCLONE_CONFIG_G_REGION=garage
    # (A CA bundle set for AWS tools makes rclone refuse its own transport.)
    sync; timed rclone-copy env -u AWS_CA_BUNDLE rclone copy "$work/local" g:copies/rclone
    "$cairn" --repo s3://copies/replica init --like "$work/local" >/dev/null 2>&1
    sync; timed cairn-copy "$cairn" copy --no-progress --from "$work/local" --to s3://copies/replica
    CAIRN_PASSWORD=other "$cairn" --repo s3://copies/other init >/dev/null 2>&1
    CAIRN_PASSWORD=other "$cairn" --repo s3://copies/other key add --role put-only --no-password -o "$work/other-put.key" >/dev/null
    sync; timed cairn-copy-reencrypt "$cairn" copy --no-progress --from "$work/local" --to s3://copies/other \
      --reencrypt --to-key-file "$work/other-put.key"
  fi
  kill $pids; wait 2>/dev/null || true; pids=
done
repo_bytes=$(du -sb "$work/local/data" | cut -f1)
if [ "$loopfs" = yes ]; then
  target="a fresh loop-mounted ext4 for each restore"
else
  target="a directory on the disk, emptied before each restore (not root: no fresh filesystem)"
fi

python3 - "$work/times" "$bytes" "$repo_bytes" "$("$cairn" --version)" "$(restic version | head -1)" "$(rclone version | head -1)" "$("${CAIRN_GARAGE:-garage}" --version 2>/dev/null | head -1)" "$target" > "$here/bench/s3-results.md" <<'PY'
import os, sys
times, size, repo, cv, rv, cl, gv, target = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:9]
cores = os.cpu_count()
wall, rss, cpu, store = {}, {}, {}, {}
for l in open(times):
    n, w, r, c, s = l.split()
    wall[n] = float(w); rss[n] = int(r) / 1024; cpu[n] = float(c); store[n] = float(s)
tp = lambda n, b=size: b / wall[n] / 2**20
print("# Repositories on S3: bench/s3.sh\n")
print(f"The {size / 2**30:.2f} GiB mixed corpus (a {repo / 2**30:.2f} GiB Cairn repository for the copies), "
      f"on Garage on loopback ({gv}); one run; page cache warm; {cv}, {rv}, {cl}. "
      f"Client and store share the machine's {cores} cores. Restores run into {target}, "
      "and again into a tmpfs.\n")
print("| step | wall s | MiB/s | peak client RSS MiB | client CPU s | store CPU s |")
print("|---|---|---|---|---|---|")
for n in wall:
    b = repo if n.startswith(("rclone", "cairn-copy")) else size
    print(f"| {n} | {wall[n]:.1f} | {tp(n, b):.0f} | {rss[n]:.0f} | {cpu[n]:.1f} | {store[n]:.1f} |")
print("\n| ratio | 1 node | 3 nodes | bar |")
print("|---|---|---|---|")
r = lambda a, b: f"{a / b:.2f}"
print(f"| Cairn S3 backup / Cairn local, throughput | {r(wall['cairn-local'], wall['cairn-s3-1'])} | {r(wall['cairn-local'], wall['cairn-s3-3'])} | >= 0.7 |")
# The best an S3 backup could do here: client and store CPU spread over
# every core without a gap; and the client's own CPU per byte, which is
# what decides when the store has cores of its own.
best = lambda n: (cpu[n] + store[n]) / cores
print(f"| same, at best with the store on these cores (local wall / ((client + store CPU) / {cores})) | {r(wall['cairn-local'], best('cairn-s3-1'))} | {r(wall['cairn-local'], best('cairn-s3-3'))} | |")
print(f"| same, client CPU only (local CPU / S3 client CPU) | {r(cpu['cairn-local'], cpu['cairn-s3-1'])} | {r(cpu['cairn-local'], cpu['cairn-s3-3'])} | |")
print(f"| Cairn / restic S3 backup, throughput | {r(wall['restic-s3-1'], wall['cairn-s3-1'])} | {r(wall['restic-s3-3'], wall['cairn-s3-3'])} | >= 2 |")
print(f"| Cairn / restic S3 restore, throughput | {r(wall['restic-restore-1'], wall['cairn-restore-1'])} | {r(wall['restic-restore-3'], wall['cairn-restore-3'])} | >= 2 |")
print(f"| same, at best with the store on these cores (restic wall / ((client + store CPU) / {cores})) | {r(wall['restic-restore-1'], best('cairn-restore-1'))} | {r(wall['restic-restore-3'], best('cairn-restore-3'))} | |")
print(f"| same, client CPU only (restic CPU / Cairn CPU) | {r(cpu['restic-restore-1'], cpu['cairn-restore-1'])} | {r(cpu['restic-restore-3'], cpu['cairn-restore-3'])} | |")
if "cairn-restore-1-tmpfs" in wall and "cairn-restore-3-tmpfs" in wall:
    print(f"| Cairn / restic S3 restore into a tmpfs, throughput | {r(wall['restic-restore-1-tmpfs'], wall['cairn-restore-1-tmpfs'])} | {r(wall['restic-restore-3-tmpfs'], wall['cairn-restore-3-tmpfs'])} | >= 2 |")
print(f"| Cairn / restic S3 backup, peak client RSS | {r(rss['cairn-s3-1'], rss['restic-s3-1'])} | {r(rss['cairn-s3-3'], rss['restic-s3-3'])} | <= 0.5 |")
print(f"| cairn copy / rclone copy, wall (same keys) | {r(wall['cairn-copy'], wall['rclone-copy'])} | | <= 1.2 |")
print(f"| cairn copy --reencrypt / rclone copy, throughput | {r(wall['rclone-copy'], wall['cairn-copy-reencrypt'])} | | >= 0.5 |")
PY
# The ratios, also in bench/results.md with the other benchmarks' tables.
python3 - "$here/bench/s3-results.md" "$here/bench/results.md" <<'PY'
import re, sys
src, dst = sys.argv[1], sys.argv[2]
lines = open(src).read().splitlines()
ratios = "\n".join(lines[next(i for i, l in enumerate(lines) if l.startswith("| ratio")):])
section = ("## Repositories on S3 (bench/s3.sh)\n\n"
           "Garage on loopback, one run; every step and its CPU in bench/s3-results.md.\n\n" + ratios + "\n")
text = open(dst).read()
head = "## Repositories on S3 (bench/s3.sh)"
if head in text:
    text = re.sub(re.escape(head) + r".*?(?=^## |\Z)", lambda m: section + "\n", text, flags=re.S | re.M)
else:
    text = text.rstrip("\n") + "\n\n" + section
open(dst, "w").write(text.rstrip("\n") + "\n")
PY
rm -rf "$here/bench/s3-raw"; mkdir -p "$here/bench/s3-raw"
cp "$work"/time.* "$work/times" "$here/bench/s3-raw/"
cat "$here/bench/s3-results.md"
