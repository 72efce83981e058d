#!/usr/bin/env bash
# Pull backups of a home-like tree over SSH on loopback: what Flashback- and
# rsnapshot-style setups run (rsync -a, then rsync -a --link-dest=PREVIOUS
# into a new directory, pulled by the backup machine) against Cairn's pull
# job (`cairn run JOB` on the box, `cairn pull-agent` on the "laptop" as the
# forced command of the box's key), in one run:
#   1. rsync first run, Cairn first run;
#   2. 1% of the files changed (mutate-corpus.sh, untimed);
#   3. rsync --link-dest run, Cairn incremental run.
# The tree: the 200k-small-files corpus and the mixed corpus side by side.
# Wall time of each step; peak RSS of the box side (the local rsync, `cairn
# run`) and of the laptop side (the remote rsync, `cairn pull-agent`),
# both from GNU time. Caches are dropped before each timed step.
#   apt-get install -y rsync time openssh-server
#   bench/pull.sh [MIXED_SIZE]   # default 3GiB; corpora kept under /tmp/bench
#   FIRST_ROUNDS=1 INC_ROUNDS=1 bench/pull.sh   # one pair of each, ~8 minutes
# Writes bench/pull-results.md and bench/pull-raw/ (every GNU time output).
# Never run while something else builds.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
mixed_size=${1:-3GiB}
first_rounds=${FIRST_ROUNDS:-3}
inc_rounds=${INC_ROUNDS:-5}
work=/tmp/bench/pull
tree=/tmp/bench/home-tree
cargo build --release -q
cairn=$here/target/release/cairn
command -v rsync >/dev/null || { echo "needs rsync: apt-get install -y rsync"; exit 1; }
[ -x /usr/bin/time ] || { echo "needs GNU time: apt-get install -y time"; exit 1; }
if [ ! -f "$tree/.complete" ]; then
  rm -rf "$tree"; mkdir -p "$tree"
  "$here/bench/make-corpus.sh" --smallfiles "$tree/small" 200000
  "$here/bench/make-corpus.sh" "$tree/mixed" "$mixed_size"
  touch "$tree/.complete"
fi
# The run changes the tree: work on a copy.
rm -rf "$work"; mkdir -p "$work"
cp -a "$tree" "$work/src"
rm -f "$work/src/.complete"
src=$work/src
files=$(find "$src" -type f | wc -l)
bytes=$(du -sb "$src" | cut -f1)
export CAIRN_PASSWORD=bench
export HOME=$work/home XDG_CACHE_HOME=$work/home/.cache XDG_CONFIG_HOME=$work/home/.config XDG_STATE_HOME=$work/home/.local/state
mkdir -p "$HOME"

# The laptop: an OpenSSH server on loopback. One key for rsync, one forced
# to the pull agent; GNU time around each remote side records its RSS.
ssh_dir=$work/ssh; mkdir -p "$ssh_dir"
for k in host rsync box; do ssh-keygen -q -t ed25519 -N '' -f "$ssh_dir/$k"; done
port=$((20000 + RANDOM % 20000))
user=$(id -un)
# An empty repository, and no caches or job state on either end: a first run.
fresh_repo() {
  rm -rf "$work/repo" "$work/put.key" "$work/state" "$HOME/.cache" "$HOME/.local/state"
  "$cairn" init --repo "$work/repo" >/dev/null 2>&1
  "$cairn" --repo "$work/repo" key add --role put-only --no-password -o "$work/put.key" >/dev/null
}
fresh_repo
cat > "$ssh_dir/authorized_keys" <<EOF
$(cat "$ssh_dir/rsync.pub")
command="/usr/bin/time -v -o $work/agent.time $cairn pull-agent --key-file $work/put.key --allow $src",restrict $(cat "$ssh_dir/box.pub")
EOF
cat > "$ssh_dir/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $ssh_dir/host
AuthorizedKeysFile $ssh_dir/authorized_keys
PidFile $ssh_dir/sshd.pid
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
LogLevel ERROR
EOF
mkdir -p /run/sshd 2>/dev/null || true
/usr/sbin/sshd -f "$ssh_dir/sshd_config"
cleanup() { [ -f "$ssh_dir/sshd.pid" ] && kill "$(cat "$ssh_dir/sshd.pid")" 2>/dev/null || true; }
trap cleanup EXIT
ssh_opts="-p $port -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes"

# The box's daemon config: the repository needs no key (the box holds none).
cat > "$work/cairn.toml" <<EOF
[daemon]
state = "$work/state"
listen = "off"

[repository.box]
path = "$work/repo"

[[job]]
name = "laptop"
kind = "pull"
repository = "box"
ssh = "$user@127.0.0.1"
ssh_command = "ssh -i $ssh_dir/box $ssh_opts"
remote_cairn = "$cairn"
paths = ["$src"]
every = "1d"
max_vanished = "off"
EOF

wall_of() {
  python3 - "$1" <<'PY'
import sys
for l in open(sys.argv[1]):
    if "Elapsed (wall clock)" in l:
        t = l.rsplit(" ", 1)[1].strip().split(":")
        print(f"{float(t[-1]) + 60 * float(t[-2]) + (3600 * float(t[-3]) if len(t) > 2 else 0):.2f}")
PY
}
rss_of() { grep "Maximum resident" "$1" | awk '{print $NF}'; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
: > "$work/times"

# step NAME: the box side under GNU time; the laptop side's time file is
# written by the remote command.
rsync_step() {
  local name=$1; shift
  rm -f "$work/remote.time"
  drop
  /usr/bin/time -v -o "$work/$name.time" rsync -a --delete \
    --rsync-path="/usr/bin/time -v -o $work/remote.time rsync" \
    -e "ssh -i $ssh_dir/rsync $ssh_opts" "$@" > "$work/$name.out" 2>&1 || {
      echo "$name failed:"; tail -20 "$work/$name.out"; exit 1; }
  echo "$name $(wall_of "$work/$name.time") $(rss_of "$work/$name.time") $(rss_of "$work/remote.time")" >> "$work/times"
  mv "$work/remote.time" "$work/$name.remote.time"
}
cairn_step() {
  local name=$1
  rm -f "$work/agent.time"
  drop
  /usr/bin/time -v -o "$work/$name.time" env -u CAIRN_PASSWORD "$cairn" run laptop -c "$work/cairn.toml" --no-progress > "$work/$name.out" 2>&1 || {
    echo "$name failed:"; tail -20 "$work/$name.out"; exit 1; }
  for _ in $(seq 50); do [ -s "$work/agent.time" ] && break; sleep 0.1; done
  echo "$name $(wall_of "$work/$name.time") $(rss_of "$work/$name.time") $(rss_of "$work/agent.time")" >> "$work/times"
  mv "$work/agent.time" "$work/$name.agent.time"
}

mkdir -p "$work/rsync"
for r in $(seq "$first_rounds"); do
  rm -rf "$work/rsync/first"
  rsync_step "rsync-first-$r" "$user@127.0.0.1:$src/" "$work/rsync/first/"
  fresh_repo
  cairn_step "cairn-first-$r"
done
prev=$work/rsync/first
for r in $(seq "$inc_rounds"); do
  "$here/bench/mutate-corpus.sh" "$src" 1 "$r" > "$work/mutate.out" 2>&1
  rsync_step "rsync-link-dest-$r" --link-dest="$prev/" "$user@127.0.0.1:$src/" "$work/rsync/inc-$r/"
  [ "$prev" = "$work/rsync/first" ] || rm -rf "$prev"
  prev=$work/rsync/inc-$r
  cairn_step "cairn-incremental-$r"
done
# Both copies hold the changed tree.
python3 "$here/bench/verify-restore.py" "$src" "$prev" > "$work/verify-rsync.txt" || true
"$cairn" --repo "$work/repo" restore latest "$work/restored" --no-progress >/dev/null
python3 "$here/bench/verify-restore.py" "$src" "$work/restored$src" > "$work/verify-cairn.txt" || {
  echo "Cairn's restore differs from the source:"; cat "$work/verify-cairn.txt"; exit 1; }

python3 - "$work/times" "$files" "$bytes" "$("$cairn" --version)" "$(rsync --version | head -1)" "$mixed_size" > "$here/bench/pull-results.md" <<'PY'
import statistics, sys
times, files, size, cv, rv, mixed = sys.argv[1:7]
runs = {}
for l in open(times):
    n, w, box, laptop = l.split()
    step, r = n.rsplit("-", 1)
    runs.setdefault(step, []).append((int(r), float(w), int(box) / 1024, int(laptop) / 1024))
med = {k: statistics.median(w for _, w, _, _ in v) for k, v in runs.items()}
peak = lambda k, i: max(x[i] for x in runs[k])
print("# Pull backups over SSH: bench/pull.sh\n")
print(f"A home-like tree: 200k small files and the {mixed} mixed corpus, {int(files):,} files, "
      f"{int(size) / 2**30:.2f} GiB; pulled over SSH on loopback; {cv}; {rv}. Caches dropped before "
      f"each step. First runs: {len(runs['cairn-first'])} alternating pairs into empty targets; "
      f"incremental runs: {len(runs['cairn-incremental'])} alternating pairs, each after a 1% change "
      "(bench/mutate-corpus.sh, seeded by the round).\n")
print("| step | runs, wall s | median wall s | box peak RSS MiB | laptop peak RSS MiB |")
print("|---|---|---|---|---|")
for n in ["rsync-first", "cairn-first", "rsync-link-dest", "cairn-incremental"]:
    ws = " ".join(f"{w:.1f}" for _, w, _, _ in sorted(runs[n]))
    print(f"| {n} | {ws} | {med[n]:.1f} | {peak(n, 2):.0f} | {peak(n, 3):.0f} |")
print("\n| ratio (of the medians) | value | bar |")
print("|---|---|---|")
print(f"| Cairn first / rsync first, wall | {med['cairn-first'] / med['rsync-first']:.2f} | <= 0.5 |")
print(f"| Cairn incremental / rsync --link-dest, wall | {med['cairn-incremental'] / med['rsync-link-dest']:.2f} | <= 0.2 |")
print(f"| Cairn box peak RSS | {max(peak('cairn-first', 2), peak('cairn-incremental', 2)):.0f} MiB | <= 64 MiB |")
print(f"| Cairn laptop peak RSS | {max(peak('cairn-first', 3), peak('cairn-incremental', 3)):.0f} MiB | <= 64 MiB |")
PY
rm -rf "$here/bench/pull-raw"; mkdir -p "$here/bench/pull-raw"
cp "$work"/*.time "$work/times" "$work"/verify-*.txt "$here/bench/pull-raw/"
cat "$here/bench/pull-results.md"
