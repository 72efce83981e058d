#!/usr/bin/env bash
# One file out of a million-file snapshot: `cairn restore SNAP:PATH`
# against `restic restore --include PATH`, as alternating pairs (PAIRS,
# default 5; page cache dropped before each), medians. The corpus is
# 1,000,000 files of 1-8 KiB (`make-corpus.sh --smallfiles`, made once
# under /tmp/bench); the file restored is near the end of the walk order.
#   bench/single-file.sh       (root, restic, GNU time; ~20 minutes the first time)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
pairs=${PAIRS:-5}
corpus=/tmp/bench/smallfiles-1m
w=/tmp/bench/single
out=$here/single-file-results.md
. "$here/common.sh"
need_root single-file.sh "it drops the page cache"
need single-file.sh restic /usr/bin/time
cairn=$(cairn_bin)
[ -d "$corpus" ] || "$here/make-corpus.sh" --smallfiles "$corpus" 1000000 >/dev/null
rm -rf "$w"; mkdir -p "$w/raw"
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench
export XDG_CACHE_HOME=$w/cache XDG_CONFIG_HOME=$w/config
"$cairn" init --repo "$w/cairn-repo" >/dev/null
"$cairn" backup --repo "$w/cairn-repo" "$corpus" >/dev/null
restic init --repo "$w/restic-repo" >/dev/null
restic backup --repo "$w/restic-repo" "$corpus" >/dev/null
file=$(find "$corpus" -type f | sort | tail -1)
: >"$w/raw/pairs.tsv"
for i in $(seq "$pairs"); do
  for tool in cairn restic; do
    rm -rf "$w/dest"; sync; echo 3 >/proc/sys/vm/drop_caches
    case $tool in
      cairn) cmd=("$cairn" restore --repo "$w/cairn-repo" "latest:$file" "$w/dest") ;;
      restic) cmd=(restic restore --repo "$w/restic-repo" latest --include "$file" --target "$w/dest") ;;
    esac
    /usr/bin/time -f "%e %M" -o "$w/raw/$tool-$i.time" "${cmd[@]}" >/dev/null
    got=$(find "$w/dest" -type f | head -1)
    cmp -s "$got" "$file" || { echo "$tool restored the wrong bytes" >&2; exit 1; }
    printf '%s\t%s\t%s\n' "$i" "$tool" "$(tail -1 "$w/raw/$tool-$i.time")" >>"$w/raw/pairs.tsv"
    echo "pair $i $tool: $(tail -1 "$w/raw/$tool-$i.time")"
  done
done
python3 - "$w/raw/pairs.tsv" "$out" "$pairs" "$file" <<'PY'
import statistics as st, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n") if l]
wall = {t: [float(r[2].split()[0]) for r in rows if r[1] == t] for t in ("cairn", "restic")}
rss = {t: max(int(r[2].split()[1]) for r in rows if r[1] == t) for t in ("cairn", "restic")}
mc, mr = st.median(wall["cairn"]), st.median(wall["restic"])
lines = [
    "# One file out of a million-file snapshot",
    "",
    f"`bench/single-file.sh`: {sys.argv[3]} alternating pairs, medians, page cache dropped before each; the file is `{sys.argv[4]}`.",
    "",
    "| figure | Cairn | restic | ratio |",
    "|---|---|---|---|",
    f"| restore of the one file, wall | {mc:.2f} s | {mr:.2f} s | {mc / mr:.2f} |",
    f"| peak RSS | {rss['cairn'] / 1024:.0f} MiB | {rss['restic'] / 1024:.0f} MiB | |",
    "",
    "| pair | tool | wall s, peak RSS KiB |",
    "|---|---|---|",
] + [f"| {r[0]} | {r[1]} | {r[2]} |" for r in rows]
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
rm -rf "$w/dest"
