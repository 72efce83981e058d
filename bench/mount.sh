#!/usr/bin/env bash
# `cairn mount` against `cairn restore` and `restic mount`, in one run:
#
#   - cat of a 1 GiB file through a fresh Cairn mount, against `cairn
#     restore` of that file into a tmpfs (the bar: the mount's throughput
#     at least 0.7 of the restore's);
#   - `find` printing size, mode and owner of every entry (one stat each)
#     over the 200k-small-files snapshot through a fresh Cairn mount,
#     against the same through a fresh `restic mount` of the same data
#     (the bar: Cairn's time at most 0.5 of restic's);
#   - the peak RSS of every Cairn mount process (the bar: 64 MiB).
#
# Alternating pairs (PAIRS, default 5), the median of each side. Page
# caches are dropped before each timed step and every step gets a fresh
# mount, so nothing is served from a previous run's cache.
#   bench/mount.sh            (root, restic, GNU time, fuse3; ~15 minutes)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
pairs=${PAIRS:-5}
w=/tmp/bench/mount
big=/tmp/bench/mount-big
small=/tmp/bench/smallfiles-200k
out=$here/mount-results.md
. "$here/common.sh"
need_root mount.sh "it drops the page cache"
need mount.sh restic /usr/bin/time fusermount3
cairn=$(cairn_bin)

# The corpora: one 1 GiB file (half random, half text-like, in 1 MiB
# runs) and 200,000 files of 1-8 KiB; made once.
if [ ! -f "$big/big.bin" ]; then
  mkdir -p "$big"
  python3 - "$big/big.bin" <<'PY'
import random, sys
r = random.Random(42)
words = [bytes(r.choice(b"abcdefghijklmnopqrstuvwxyz ") for _ in range(r.randint(2, 12))) for _ in range(5000)]
with open(sys.argv[1], "wb") as f:
    for i in range(1024):
        if i % 2:
            f.write(r.randbytes(1 << 20))
        else:
            b = bytearray()
            while len(b) < 1 << 20:
                b += r.choice(words) + b" "
            f.write(bytes(b[: 1 << 20]))
PY
fi
[ -d "$small" ] || "$here/make-corpus.sh" --smallfiles "$small" 200000 >/dev/null

rm -rf "$w"; mkdir -p "$w/mnt" "$w/raw"
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench
export XDG_CACHE_HOME=$w/cache XDG_CONFIG_HOME=$w/config
"$cairn" init --repo "$w/cairn-repo" >/dev/null
"$cairn" backup --repo "$w/cairn-repo" --group big "$big" >/dev/null
"$cairn" backup --repo "$w/cairn-repo" --group small "$small" >/dev/null
restic init --repo "$w/restic-repo" >/dev/null
restic backup --repo "$w/restic-repo" --host small "$small" >/dev/null

drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
mounted() { grep -q " $w/mnt " /proc/mounts; }
wait_mounted() {
  for _ in $(seq 600); do mounted && return 0; sleep 0.05; done
  echo "not mounted" >&2; return 1
}
# Starts a mount under GNU time (its peak RSS lands in $1).
start_cairn() {
  /usr/bin/time -f "%M" -o "$1" "$cairn" mount --repo "$w/cairn-repo" "$w/mnt" 2>"$w/mount.log" &
  mpid=$!
  wait_mounted
}
start_restic() {
  restic mount --repo "$w/restic-repo" "$w/mnt" >"$w/restic-mount.log" 2>&1 &
  mpid=$!
  wait_mounted
}
stop_mount() {
  umount "$w/mnt" 2>/dev/null || fusermount3 -u "$w/mnt"
  wait "$mpid" 2>/dev/null || true
}
secs() { python3 -c 'import sys,time; print("%.3f" % (time.time()-float(sys.argv[1])))' "$1"; }
now() { python3 -c 'import time; print(time.time())'; }

rss=()
: >"$w/raw/cat.tsv"; : >"$w/raw/find.tsv"
for i in $(seq "$pairs"); do
  # cat through a fresh mount, then restore of the same file.
  drop; start_cairn "$w/raw/rss-cat-$i"
  f=$(ls -d "$w/mnt/groups/big/latest/")
  t0=$(now); cat "$f$big/big.bin" >/dev/null; t_cat=$(secs "$t0")
  stop_mount; rss+=("$(tail -1 "$w/raw/rss-cat-$i")")
  rm -rf /dev/shm/cairn-mount-bench
  drop; t0=$(now)
  "$cairn" restore --repo "$w/cairn-repo" --group big "latest:$big/big.bin" /dev/shm/cairn-mount-bench >/dev/null
  t_restore=$(secs "$t0")
  cmp -s /dev/shm/cairn-mount-bench/big.bin "$big/big.bin" || { echo "restore differs" >&2; exit 1; }
  rm -rf /dev/shm/cairn-mount-bench
  printf '%s\t%s\t%s\n' "$i" "$t_cat" "$t_restore" >>"$w/raw/cat.tsv"

  # find + stat over 200k files: Cairn, then restic.
  drop; start_cairn "$w/raw/rss-find-$i"
  t0=$(now); n_cairn=$(find "$w/mnt/groups/small/latest/" -printf '%s %m %u\n' | wc -l); t_cairn=$(secs "$t0")
  stop_mount; rss+=("$(tail -1 "$w/raw/rss-find-$i")")
  drop; start_restic
  t0=$(now); n_restic=$(find "$w/mnt/hosts/small/latest/" -printf '%s %m %u\n' | wc -l); t_restic=$(secs "$t0")
  stop_mount
  printf '%s\t%s\t%s\t%s\t%s\n' "$i" "$t_cairn" "$t_restic" "$n_cairn" "$n_restic" >>"$w/raw/find.tsv"
  echo "pair $i: cat $t_cat s, restore $t_restore s; find cairn $t_cairn s ($n_cairn), restic $t_restic s ($n_restic)"
done

python3 - "$w/raw" "$out" "$pairs" "${rss[@]}" <<'PY'
import statistics as st, sys
raw, out, pairs = sys.argv[1], sys.argv[2], sys.argv[3]
rss = [int(x) for x in sys.argv[4:]]
cat = [l.split("\t") for l in open(raw + "/cat.tsv").read().split("\n") if l]
fnd = [l.split("\t") for l in open(raw + "/find.tsv").read().split("\n") if l]
c_cat = st.median(float(r[1]) for r in cat)
c_res = st.median(float(r[2]) for r in cat)
f_c = st.median(float(r[1]) for r in fnd)
f_r = st.median(float(r[2]) for r in fnd)
lines = [
    "# cairn mount",
    "",
    f"`bench/mount.sh`: {pairs} alternating pairs, medians; page cache dropped and a fresh mount before every timed step.",
    "",
    "| figure | Cairn mount | reference | ratio | bar |",
    "|---|---|---|---|---|",
    f"| cat of a 1 GiB file, throughput vs `cairn restore` of it into a tmpfs | {c_cat:.2f} s | {c_res:.2f} s | {c_res / c_cat:.2f} | >= 0.7 |",
    f"| `find -printf '%s %m %u'` over 200k small files, time vs `restic mount` | {f_c:.2f} s | {f_r:.2f} s | {f_c / f_r:.2f} | <= 0.5 |",
    f"| peak RSS of the mount process, highest of {len(rss)} mounts | {max(rss) / 1024:.0f} MiB | | | <= 64 MiB |",
    "",
    "Every pair (seconds):",
    "",
    "| pair | cat | restore | find, Cairn | find, restic | entries, Cairn | entries, restic |",
    "|---|---|---|---|---|---|---|",
]
for c, f in zip(cat, fnd):
    lines.append(f"| {c[0]} | {c[1]} | {c[2]} | {f[1]} | {f[2]} | {f[3]} | {f[4]} |")
lines.append("")
lines.append("Peak RSS of each Cairn mount (KiB): " + ", ".join(str(x) for x in rss))
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
