#!/usr/bin/env bash
# Garbage collection at scale: Cairn and restic on the same data, one run.
#   bench/prune.sh [PARTS...]      # default "1 2 4": 1M, 2M, 4M files
# Each size: back up PARTS million tiny files (one blob each), back them up
# again leaving out a tenth of the directories and adding a tenth new, then
# forget the first snapshot and prune (deleting at once: Cairn with
# --grace 0, as restic does), then check without reading data. restic runs
# at RESTIC_AT (default 2) million files only. Peak RSS and wall from GNU
# time; results in bench/prune-results.md.
#   apt-get install -y restic time
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
sizes=${*:-1 2 4}
restic_at=${RESTIC_AT:-2}
max=0
for n in $sizes; do [ "$n" -gt "$max" ] && max=$n; done
work=${WORK:-/tmp/bench/gc}
corpus=$work/corpus-${GC_PER_DIR:-1000}
mkdir -p "$work"
cargo build --release -q
cairn=$here/target/release/cairn
python3 bench/gc-corpus.py "$corpus" "$max"
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench
export XDG_CACHE_HOME=$work/cache XDG_CONFIG_HOME=$work/config
raw=$work/raw
rm -rf "$raw" && mkdir -p "$raw"

# timed NAME CMD...: wall seconds and peak RSS (KiB) into $raw/NAME.
timed() {
  local name=$1
  shift
  sync
  /usr/bin/time -v -o "$raw/$name.time" "$@" >"$raw/$name.out" 2>"$raw/$name.err" || {
    echo "$name failed:" >&2
    tail -5 "$raw/$name.err" >&2
    exit 1
  }
}
wall() { awk -F': ' '/Elapsed/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$raw/$1.time"; }
rss() { awk -F': ' '/Maximum resident/ {print $2}' "$raw/$1.time"; }

paths() {
  local n=$1 out=()
  for ((k = 0; k < n; k++)); do out+=("$corpus/p$k"); done
  echo "${out[@]}"
}
extras() {
  local n=$1 out=()
  for ((k = 0; k < n; k++)); do out+=("$corpus/extra$k"); done
  echo "${out[@]}"
}

for n in $sizes; do
  repo=$work/cairn-$n
  rm -rf "$repo" "$XDG_CACHE_HOME"
  # Cairn and restic each start with cold caches of their own.
  "$cairn" init --repo "$repo" -q 2>/dev/null
  timed "cairn-$n-backup1" "$cairn" backup --repo "$repo" -q --no-progress $(paths "$n")
  timed "cairn-$n-backup2" "$cairn" backup --repo "$repo" -q --no-progress \
    --exclude "$corpus/p*/d???0" $(paths "$n") $(extras "$n")
  first=$("$cairn" snapshots --repo "$repo" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
  timed "cairn-$n-prune" "$cairn" forget --repo "$repo" --prune --grace 0 "$first"
  timed "cairn-$n-check" "$cairn" check --repo "$repo"
  timed "cairn-$n-check-structure" "$cairn" check --repo "$repo" --structure-only
  echo "cairn $n M: prune $(wall cairn-$n-prune) s $(rss cairn-$n-prune) KiB, check $(wall cairn-$n-check) s"
  if [ "$n" = "$restic_at" ]; then
    rrepo=$work/restic-$n
    rm -rf "$rrepo"
    restic init -q --repo "$rrepo"
    timed "restic-$n-backup1" restic backup -q --repo "$rrepo" $(paths "$n")
    timed "restic-$n-backup2" restic backup -q --repo "$rrepo" \
      --exclude "$corpus/p*/d???0" $(paths "$n") $(extras "$n")
    rfirst=$(restic snapshots --repo "$rrepo" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["short_id"])')
    timed "restic-$n-prune" restic forget --repo "$rrepo" --prune "$rfirst"
    timed "restic-$n-check" restic check --repo "$rrepo"
    echo "restic $n M: prune $(wall restic-$n-prune) s $(rss restic-$n-prune) KiB, check $(wall restic-$n-check) s"
    rm -rf "$rrepo"
  fi
  blobs=$("$cairn" stats --repo "$repo" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["blobs"])')
  echo "$n $blobs" >"$raw/cairn-$n.blobs"
  rm -rf "$repo"
done

python3 - "$raw" "$restic_at" $sizes >bench/prune-results.md <<'PY'
import sys, re, os
raw, rat, sizes = sys.argv[1], sys.argv[2], sys.argv[3:]
def t(name):
    s = open(os.path.join(raw, name + ".time")).read()
    w = re.search(r"Elapsed.*: (.*)", s).group(1).split(":")
    secs = 0.0
    for p in w:
        secs = secs * 60 + float(p)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", s).group(1))
    return secs, rss
print("# Garbage collection at scale (bench/prune.sh)\n")
print("Tiny distinct files, one blob each; the second backup leaves out a tenth")
print("of the directories and adds a tenth new; then `forget FIRST --prune`")
print("(Cairn with `--grace 0`, deleting in the same run as restic does) and")
print("`check` without reading data.\n")
print("| files (M) | blobs | step | Cairn wall s | Cairn RSS MiB | restic wall s | restic RSS MiB | wall ratio | RSS ratio |")
print("|---|---|---|---|---|---|---|---|---|")
rss_by = {}
for n in sizes:
    blobs = open(os.path.join(raw, f"cairn-{n}.blobs")).read().split()[1]
    for step in ["backup1", "backup2", "prune", "check", "check-structure"]:
        cw, cr = t(f"cairn-{n}-{step}")
        if step == "prune":
            rss_by[int(n)] = cr
        rw = rr = None
        rstep = "check" if step == "check-structure" else step
        if n == rat and os.path.exists(os.path.join(raw, f"restic-{n}-{rstep}.time")):
            rw, rr = t(f"restic-{n}-{rstep}")
        fmt = lambda v: "" if v is None else v
        ratio = lambda a, b: "" if b is None else f"{a / b:.2f}"
        print(f"| {n} | {blobs} | {step} | {cw:.1f} | {cr / 1024:.0f} | {fmt(rw if rw is None else round(rw, 1))} | "
              f"{fmt(rr if rr is None else round(rr / 1024))} | {ratio(cw, rw)} | {ratio(cr, rr)} |")
ns = sorted(rss_by)
if len(ns) >= 2:
    print()
    print("Prune peak RSS by size: " + ", ".join(f"{n}M files {rss_by[n] / 1024:.0f} MiB" for n in ns) + ".")
    a, b = ns[0], ns[-1]
    growth = rss_by[b] / rss_by[a]
    import math
    per_doubling = growth ** (1 / max(1.0, math.log2(b / a)))
    print(f"From {a}M to {b}M files RSS grows {growth:.2f}x, {per_doubling:.2f}x per doubling; "
          f"extrapolated 2M to 8M (two doublings): {per_doubling ** 2:.2f}x.")
PY
cat bench/prune-results.md
