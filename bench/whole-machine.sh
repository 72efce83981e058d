#!/usr/bin/env bash
# A whole machine onto a new disk, Cairn against restic, in one run:
# this machine's root filesystem (`--one-file-system`; without /work, /tmp
# and /root, which hold this project, its build and the bench data) backed
# up by both tools, then restored by each into a fresh ext4 on a loop
# device that writes to its backing file with direct I/O, as a disk would
# (see restore.sh), as alternating pairs (PAIRS, default 3; page cache
# dropped before each). After Cairn's first restore: `dpkg --verify` inside a
# chroot of the restored system against `dpkg --verify` on the machine,
# a restored program run there, and `verify-restore.py` over /usr and
# /var/lib/dpkg. Wall time (GNU time) and the median of each tool.
#   bench/whole-machine.sh        (root, restic, GNU time; ~10 minutes)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
pairs=${PAIRS:-3}
w=/tmp/bench/whole
out=$here/whole-machine-results.md
. "$here/common.sh"
need_root whole-machine.sh
need whole-machine.sh restic /usr/bin/time mkfs.ext4 losetup chroot dpkg
cairn=$(cairn_bin)
rm -rf "$w"; mkdir -p "$w/mnt" "$w/raw"
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench
export XDG_CACHE_HOME=$w/cache XDG_CONFIG_HOME=$w/config
excl=(--exclude /work --exclude /tmp --exclude /root)
"$cairn" init --repo "$w/cairn-repo" >/dev/null
/usr/bin/time -f "%e" -o "$w/raw/cairn-backup.time" \
  "$cairn" backup --repo "$w/cairn-repo" --one-file-system "${excl[@]}" / >/dev/null
restic init --repo "$w/restic-repo" >/dev/null
/usr/bin/time -f "%e" -o "$w/raw/restic-backup.time" \
  restic backup --repo "$w/restic-repo" --one-file-system "${excl[@]}" / >/dev/null
dpkg --verify | sort >"$w/raw/dpkg-source.txt" || true

size=$(( $(du -sxb --exclude=/work --exclude=/tmp --exclude=/root / | cut -f1) * 3 / 2 / 1048576 + 1024 ))M
fresh_disk() {
  loop_disk "$w/disk.img" "$size" "$w/mnt"
  sync; echo 3 >/proc/sys/vm/drop_caches
}
: >"$w/raw/restores.tsv"
checked=no
for i in $(seq "$pairs"); do
  for tool in cairn restic; do
    fresh_disk
    case $tool in
      cairn) cmd=("$cairn" restore --repo "$w/cairn-repo" latest "$w/mnt") ;;
      restic) cmd=(restic restore --repo "$w/restic-repo" latest --target "$w/mnt") ;;
    esac
    /usr/bin/time -f "%e %U %S %M" -o "$w/raw/$tool-restore-$i.time" "${cmd[@]}" >/dev/null 2>"$w/raw/$tool-restore-$i.log" || true
    printf '%s\t%s\t%s\n' "$i" "$tool" "$(tail -1 "$w/raw/$tool-restore-$i.time")" >>"$w/raw/restores.tsv"
    if [ "$tool" = cairn ] && [ "$checked" = no ]; then
      chroot "$w/mnt" /usr/bin/dpkg --verify | sort >"$w/raw/dpkg-restored.txt" || true
      chroot "$w/mnt" /bin/sh -c 'echo restored system runs' >"$w/raw/chroot-run.txt"
      python3 "$here/verify-restore.py" /usr "$w/mnt/usr" | tail -1 >"$w/raw/verify-usr.txt" || true
      python3 "$here/verify-restore.py" /var/lib/dpkg "$w/mnt/var/lib/dpkg" | tail -1 >"$w/raw/verify-dpkg.txt" || true
      checked=yes
    fi
    echo "pair $i $tool: $(tail -1 "$w/raw/$tool-restore-$i.time")"
  done
done
drop_loop_disk "$w/disk.img" "$w/mnt"

python3 - "$w/raw" "$out" "$pairs" <<'PY'
import statistics as st, sys
raw, out, pairs = sys.argv[1], sys.argv[2], sys.argv[3]
rows = [l.split("\t") for l in open(raw + "/restores.tsv").read().split("\n") if l]
wall = {t: [float(r[2].split()[0]) for r in rows if r[1] == t] for t in ("cairn", "restic")}
cpu = {t: [sum(map(float, r[2].split()[1:3])) for r in rows if r[1] == t] for t in ("cairn", "restic")}
mc, mr = st.median(wall["cairn"]), st.median(wall["restic"])
bc = open(raw + "/cairn-backup.time").read().split()[-1]
br = open(raw + "/restic-backup.time").read().split()[-1]
# The directories left out of the backup are missing in the restore, as
# they should be; everything else must read the same.
left_out = ("/work", "/tmp", "/root")
def verify_lines(name):
    return [l for l in open(raw + "/" + name).read().split("\n")
            if l and not any(l.rsplit(" ", 1)[-1] == d or l.rsplit(" ", 1)[-1].startswith(d + "/") for d in left_out)]
same = verify_lines("dpkg-source.txt") == verify_lines("dpkg-restored.txt")
lines = [
    "# Whole machine onto a new disk",
    "",
    f"`bench/whole-machine.sh`: this machine's root filesystem (`--one-file-system`, without /work, /tmp and /root), restored into a fresh ext4 on a loop device writing to its backing file with direct I/O; {pairs} alternating pairs, medians, page cache dropped before each.",
    "",
    "| figure | Cairn | restic | ratio | bar |",
    "|---|---|---|---|---|",
    f"| restore, wall | {mc:.1f} s | {mr:.1f} s | {mc / mr:.2f} | <= 0.35 |",
    f"| restore, CPU (user + sys) | {st.median(cpu['cairn']):.1f} s | {st.median(cpu['restic']):.1f} s | {st.median(cpu['cairn']) / st.median(cpu['restic']):.2f} | |",
    f"| first backup, wall | {float(bc):.1f} s | {float(br):.1f} s | {float(bc) / float(br):.2f} | |",
    "",
    f"`dpkg --verify` in a chroot of Cairn's restore {'prints exactly' if same else 'DIFFERS from'} what it prints on the machine ({len(verify_lines('dpkg-source.txt'))} lines there, besides the directories left out of the backup).",
    "`verify-restore.py /usr`: " + open(raw + "/verify-usr.txt").read().strip(),
    "`verify-restore.py /var/lib/dpkg`: " + open(raw + "/verify-dpkg.txt").read().strip(),
    "",
    "| pair | tool | wall s, user s, sys s, peak RSS KiB |",
    "|---|---|---|",
]
for r in rows:
    lines.append(f"| {r[0]} | {r[1]} | {r[2]} |")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
