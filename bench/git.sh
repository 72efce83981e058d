#!/usr/bin/env bash
# Forge mirroring against what people run today: an hourly loop of
# `git fetch --all` in every mirror of an account, one after another.
#   - 200 repositories (30 commits each, about 60 KiB packed) served by the
#     test forge (crates/testkit, `cairn-forge-sim`): a GitHub-shaped
#     listing, and git's smart HTTP through the real `git http-backend`,
#     on loopback;
#   - the loop: `git clone --mirror` of each once, then the sequential
#     `for m in */; do git -C $m fetch --all -q; done`;
#   - Cairn: `cairn git mirror` into its own mirrors, then a snapshot of
#     them into a local repository (the whole run, snapshot included).
# Two cases, as alternating pairs (loop, Cairn, Cairn, loop, …; PAIRS
# pairs, default 5, medians): no change upstream, and one new commit in
# every repository before each measured run. Peak RSS of Cairn's run
# (GNU time, the largest process of the run, git included); client CPU
# (GNU time) and the forge's CPU (/proc of the simulator and its CGI
# children), which shares the same cores.
#   apt-get install -y git time bc
#   bench/git.sh            # about 5 minutes
# Writes bench/git-results.md and a section of bench/results.md.
# Never run while something else builds.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
pairs=${PAIRS:-5}
repos=${REPOS:-200}
work=/tmp/bench/git
[ -x /usr/bin/time ] || { echo "needs GNU time: apt-get install -y time"; exit 1; }
command -v bc >/dev/null || { echo "needs bc: apt-get install -y bc"; exit 1; }
cargo build --release -q -p cairn-cli -p cairn-testkit --bin cairn --bin cairn-forge-sim
cairn=$here/target/release/cairn
sim=$here/target/release/cairn-forge-sim
rm -rf "$work"; mkdir -p "$work/forge/bench" "$work/loop" "$work/raw"
export CAIRN_PASSWORD=bench HOME=$work/home XDG_CACHE_HOME=$work/home/.cache \
  XDG_STATE_HOME=$work/home/.local/state XDG_CONFIG_HOME=$work/home/.config
mkdir -p "$HOME"
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.org \
  GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.org

# One commit on main of the bare repository $1 (fast-import: no work tree).
commit() {
  local n; n=$(date +%s%N)
  {
    printf 'commit refs/heads/main\ncommitter bench <bench@example.org> %s +0000\n' "${n:0:10}"
    printf 'data 7\nchange\n'
    git -C "$1" rev-parse -q --verify refs/heads/main >/dev/null && printf 'from refs/heads/main^0\n'
    printf 'M 644 inline notes/%s.txt\ndata 40\n%-39s\n' "$n" "$RANDOM$n"
  } | git -C "$1" fast-import --quiet
}

echo "making $repos repositories"
for i in $(seq -w 1 "$repos"); do
  r=$work/forge/bench/repo-$i.git
  git init --bare -q -b main "$r"
  {
    for c in $(seq 1 30); do
      printf 'commit refs/heads/main\ncommitter bench <bench@example.org> %d +0000\ndata 6\nc %03d\n' $((1700000000 + c)) "$c"
      printf 'M 644 inline src/file%d.txt\ndata <<EOF\n' "$c"
      head -c 1500 /dev/urandom | base64 -w 76
      printf 'EOF\n'
    done
  } | git -C "$r" fast-import --quiet
done

"$sim" "$work/forge" bench > "$work/sim.out" 2>"$work/sim.err" &
simpid=$!
trap 'kill $simpid 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$work/sim.out" ] && break; sleep 0.1; done
url=$(cut -d' ' -f1 "$work/sim.out")
echo "forge at $url with $(cut -d' ' -f2 "$work/sim.out") repositories"

echo "initial clones and mirrors"
for i in $(seq -w 1 "$repos"); do
  git clone -q --mirror "$url/git/bench/repo-$i.git" "$work/loop/repo-$i.git"
done
"$cairn" --repo "$work/repo" init -q
mirror=("$cairn" --repo "$work/repo" -q git mirror --forge github --base-url "$url" --owner bench --mirrors "$work/mirrors")
"${mirror[@]}"

loop() {
  ( cd "$work/loop"; for m in */; do git -C "$m" fetch --all -q; done )
}

# CPU seconds the forge has used, its CGI children (http-backend,
# upload-pack) included once they are waited for.
forge_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15 + $16 + $17) / hz }' "/proc/$simpid/stat"
}

# run NAME CASE ROUND: one measured run; wall, RSS, client CPU and the
# forge's CPU in raw/.
run() {
  local f=$work/raw/$2-$1-$3.time before
  before=$(forge_cpu)
  case $1 in
    loop) /usr/bin/time -f '%e %M %U %S' -o "$f" bash -c "$(declare -f loop); work=$work; loop" ;;
    cairn) /usr/bin/time -f '%e %M %U %S' -o "$f" "${mirror[@]}" ;;
  esac
  sleep 0.2
  echo "$(cat "$f") $(echo "$(forge_cpu) - $before" | bc -l)" > "$f"
  echo "$2 $1 round $3: $(cat "$f")"
}

for c in unchanged onecommit; do
  for p in $(seq 1 "$pairs"); do
    order="loop cairn"; [ $((p % 2)) = 0 ] && order="cairn loop"
    for who in $order; do
      if [ $c = onecommit ]; then
        for r in "$work"/forge/bench/*.git; do commit "$r"; done
      fi
      sync
      run "$who" "$c" "$p"
    done
  done
done

# Checks: the mirrors hold what upstream holds (after one more run of
# each, unmeasured: the last pair's first run missed the last commits).
loop; "${mirror[@]}"
for i in 001 "$repos"; do
  a=$(git -C "$work/forge/bench/repo-$i.git" rev-parse refs/heads/main)
  b=$(git -C "$work/mirrors/repo-$i.git" rev-parse refs/heads/main)
  c2=$(git -C "$work/loop/repo-$i.git" rev-parse refs/heads/main)
  [ "$a" = "$b" ] && [ "$a" = "$c2" ] || { echo "mirror of repo-$i differs: $a $b $c2"; exit 1; }
done

python3 - "$work/raw" "$pairs" "$repos" > "$here/bench/git-results.md" <<'PY'
import os, statistics, sys
raw, pairs, repos = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def vals(case, who):
    out = []
    for p in range(1, pairs + 1):
        e, m, u, s, f = open(os.path.join(raw, f"{case}-{who}-{p}.time")).read().split()
        out.append((float(e), int(m) / 1024, float(u) + float(s), float(f)))
    return out
print(f"# Forge mirroring (bench/git.sh)\n")
print(f"{repos} repositories on the test forge (loopback, git http-backend), {pairs} alternating pairs, medians.\n")
print("| case | loop wall s | Cairn wall s | Cairn / loop speed | loop CPU s | Cairn CPU s | forge CPU s, loop / Cairn | Cairn peak RSS MiB |")
print("|---|---|---|---|---|---|---|---|")
for case, label in [("unchanged", "no change upstream"), ("onecommit", "one new commit in each")]:
    l, c = vals(case, "loop"), vals(case, "cairn")
    lw = statistics.median(x[0] for x in l); cw = statistics.median(x[0] for x in c)
    lc = statistics.median(x[2] for x in l); cc = statistics.median(x[2] for x in c)
    lf = statistics.median(x[3] for x in l); cf = statistics.median(x[3] for x in c)
    rss = max(x[1] for x in c)
    print(f"| {label} | {lw:.2f} | {cw:.2f} | {lw / cw:.2f}x | {lc:.2f} | {cc:.2f} | {lf:.2f} / {cf:.2f} | {rss:.0f} |")
print("\nEach run of each tool, wall s (loop / Cairn):\n")
for case in ["unchanged", "onecommit"]:
    l, c = vals(case, "loop"), vals(case, "cairn")
    print(f"- {case}: " + ", ".join(f"{a[0]:.2f}/{b[0]:.2f}" for a, b in zip(l, c)))
PY
cat "$here/bench/git-results.md"
python3 - "$here/bench/results.md" "$here/bench/git-results.md" <<'PY'
import sys
results, section = sys.argv[1], open(sys.argv[2]).read()
head = "## Forge mirroring (bench/git.sh)"
body = section.replace("# Forge mirroring (bench/git.sh)", head, 1)
text = open(results).read()
if head in text:
    start = text.index(head)
    nxt = text.find("\n## ", start + len(head))
    text = text[:start] + body.rstrip() + "\n" + (text[nxt:] if nxt >= 0 else "")
else:
    text = text.rstrip() + "\n\n" + body
open(results, "w").write(text)
PY
