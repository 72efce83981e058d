#!/usr/bin/env bash
# Restore speed against restic at several corpus sizes, as alternating
# pairs: for each SIZE (default "1GiB 2GiB 4GiB") the mixed corpus
# (`make-corpus.sh`, made once under /tmp/bench) is backed up by both
# tools, then restored PAIRS times each (default 5), Cairn and restic in
# turn, each into a fresh ext4 on a loop device with the page cache
# dropped before it. Wall and CPU time (GNU time), medians and the ratio
# of the medians; every Cairn restore is checked with verify-restore.py.
# The loop device writes to its backing file with direct I/O, as a disk
# would: without it the kernel copies every byte a second time, into the
# backing file's page cache, and spends most of a core on that while the
# restore runs. LOOP_DIRECT=0 measures that setup instead (results in
# restore-results-buffered-loop.md and restore-raw-buffered-loop/).
#   bench/restore.sh [SIZE...]   (root, restic, GNU time, mkfs.ext4, losetup)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
pairs=${PAIRS:-5}
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1GiB 2GiB 4GiB)
w=/tmp/bench/restore
loop_direct=${LOOP_DIRECT:-1}
if [ "$loop_direct" = 1 ]; then suffix=; else suffix=-buffered-loop; fi
out=$here/restore-results$suffix.md
. "$here/common.sh"
need_root restore.sh "it mounts a fresh filesystem for every restore"
need restore.sh restic /usr/bin/time mkfs.ext4 losetup
cairn=$(cairn_bin)
raw=$here/restore-raw$suffix
# A disk left mounted by an interrupted run would stop the rm.
drop_loop_disk "$w/disk.img" "$w/mnt"
rm -rf "$w"; mkdir -p "$w/mnt" "$raw"
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench
export XDG_CACHE_HOME=$w/cache XDG_CONFIG_HOME=$w/config
: >"$raw/restores.tsv"
for size in "${sizes[@]}"; do
  corpus=/tmp/bench/corpus-$size
  [ -d "$corpus" ] || "$here/make-corpus.sh" "$corpus" "$size" >/dev/null
  rm -rf "$w/cairn-repo" "$w/restic-repo" "$w/cache"
  "$cairn" init --repo "$w/cairn-repo" >/dev/null 2>&1
  "$cairn" backup --repo "$w/cairn-repo" "$corpus" >/dev/null
  restic init --repo "$w/restic-repo" >/dev/null 2>&1
  restic backup --repo "$w/restic-repo" "$corpus" >/dev/null
  bytes=$(du -sb "$corpus" | cut -f1)
  disk=$(( bytes * 3 / 2 / 1048576 + 512 ))M
  for i in $(seq "$pairs"); do
    for tool in cairn restic; do
      loop_disk "$w/disk.img" "$disk" "$w/mnt" "$([ "$loop_direct" = 1 ] && echo on || echo off)"
      sync; echo 3 >/proc/sys/vm/drop_caches
      case $tool in
        cairn) cmd=("$cairn" restore --repo "$w/cairn-repo" latest "$w/mnt") ;;
        restic) cmd=(restic restore --repo "$w/restic-repo" latest --target "$w/mnt") ;;
      esac
      t="$raw/$size-$tool-$i.time"
      /usr/bin/time -f "%e %U %S %M" -o "$t" "${cmd[@]}" >/dev/null 2>"$w/$tool.log" || true
      line=$(tail -1 "$t")
      printf '%s\t%s\t%s\t%s\n' "$size" "$i" "$tool" "$line" >>"$raw/restores.tsv"
      echo "$size pair $i $tool: $line"
      if [ "$tool" = cairn ]; then
        if v=$(python3 "$here/verify-restore.py" "$corpus" "$w/mnt$corpus" | tail -1); then
          echo "same $v" >"$raw/$size-verify-$i.txt"
        else
          echo "DIFFERS $v" >"$raw/$size-verify-$i.txt"
        fi
      fi
    done
  done
  drop_loop_disk "$w/disk.img" "$w/mnt"
done

python3 - "$raw" "$out" "$pairs" "$loop_direct" <<'PY'
import statistics as st, sys
raw, out, pairs, loop_direct = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
rows = [l.split("\t") for l in open(raw + "/restores.tsv").read().split("\n") if l]
sizes = list(dict.fromkeys(r[0] for r in rows))
lines = [
    "# Restore speed against restic",
    "",
    f"`{'' if loop_direct else 'LOOP_DIRECT=0 '}bench/restore.sh {' '.join(sizes)}`: the mixed corpus (`make-corpus.sh`) at each size, backed up by both tools, then restored into a fresh ext4 on a loop device "
    + ("writing to its backing file with direct I/O, as a disk would" if loop_direct else "writing through the page cache of its backing file (so the kernel copies every byte twice)")
    + f", {pairs} alternating pairs (Cairn, restic, Cairn, ...), page cache dropped before each restore; medians, and the ratio of the medians. Every Cairn restore checked with `verify-restore.py`.",
    "",
    "| corpus | Cairn wall | restic wall | ratio | bar | Cairn CPU | restic CPU | Cairn RSS | restic RSS | Cairn restores verified |",
    "|---|---|---|---|---|---|---|---|---|---|",
]
for s in sizes:
    def col(tool, f):
        return [f(r[3].split()) for r in rows if r[0] == s and r[2] == tool]
    wall = {t: st.median(col(t, lambda v: float(v[0]))) for t in ("cairn", "restic")}
    cpu = {t: st.median(col(t, lambda v: float(v[1]) + float(v[2]))) for t in ("cairn", "restic")}
    rss = {t: max(col(t, lambda v: int(v[3]))) / 1024 for t in ("cairn", "restic")}
    import glob
    ok = sum(1 for p in glob.glob(f"{raw}/{s}-verify-*.txt") if open(p).read().startswith("same "))
    n = len(glob.glob(f"{raw}/{s}-verify-*.txt"))
    lines.append(
        f"| {s} | {wall['cairn']:.2f} s | {wall['restic']:.2f} s | {wall['cairn'] / wall['restic']:.2f} | <= 0.35 "
        f"| {cpu['cairn']:.2f} s | {cpu['restic']:.2f} s | {rss['cairn']:.0f} MiB | {rss['restic']:.0f} MiB | {ok} of {n} |")
lines += ["", "Every restore: wall s, user s, sys s, peak RSS KiB (GNU time).", "", "| corpus | pair | tool | time |", "|---|---|---|---|"]
for r in rows:
    lines.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
