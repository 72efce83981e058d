#!/usr/bin/env bash
# Backup throughput into the box, against a local repository and restic
# over sftp, in one run: an initial backup of the same corpus
#   - cairn into a local repository (the reference),
#   - cairn over HTTPS on loopback into `cairn server`, with a put token,
#   - cairn over ssh:// into `cairn serve --stdio --role put` (forced command),
#   - restic over sftp to the same OpenSSH server (with ssh's default cipher,
#     and with AES-GCM, which Cairn asks ssh for on a CPU with AES), and
#     restic locally.
# Peak RSS of each client (GNU time) and of the server (VmHWM).
#   apt-get install -y restic time openssh-server
#   bench/server.sh [CORPUS] [REPS]   # default /tmp/bench/corpus-1g (made if absent), 2 reps
#   ONLY="cairn-ssh restic-sftp" bench/server.sh ...   # a subset of the steps (table then lists those)
# Writes bench/server-results.md. Never run while something else builds.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
corpus=${1:-/tmp/bench/corpus-1g}
reps=${2:-2}
work=/tmp/bench/server
cargo build --release -q
cairn=$here/target/release/cairn
[ -d "$corpus" ] || "$here/bench/make-corpus.sh" "$corpus" 1GiB
bytes=$(du -sb "$corpus" | cut -f1)
rm -rf "$work"; mkdir -p "$work"
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench
export HOME=$work/home XDG_CACHE_HOME=$work/home/.cache XDG_CONFIG_HOME=$work/home/.config XDG_DATA_HOME=$work/home/.local/share
mkdir -p "$HOME"

# An OpenSSH server on loopback: one key for sftp, one forced to cairn serve.
ssh_dir=$work/ssh; mkdir -p "$ssh_dir"
for k in host sftp cairn; do ssh-keygen -q -t ed25519 -N '' -f "$ssh_dir/$k"; done
port=$((20000 + RANDOM % 20000))
user=$(id -un)
cat > "$ssh_dir/authorized_keys" <<EOF
$(cat "$ssh_dir/sftp.pub")
command="$cairn --repo $work/ssh-repo serve --stdio --role put --name bench",no-pty $(cat "$ssh_dir/cairn.pub")
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
Subsystem sftp internal-sftp
LogLevel ERROR
EOF
mkdir -p /run/sshd 2>/dev/null || true
/usr/sbin/sshd -f "$ssh_dir/sshd_config"
ssh_opts="-p $port -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes"

server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  [ -f "$ssh_dir/sshd.pid" ] && kill "$(cat "$ssh_dir/sshd.pid")" 2>/dev/null || true
}
trap cleanup EXIT

# timed NAME CMD...: wall seconds and max RSS (KiB) appended to $work/times
timed() {
  local name=$1; shift
  /usr/bin/time -v -o "$work/time.$name" "$@" > "$work/out.$name" 2>&1 || {
    echo "$name failed:"; tail -20 "$work/out.$name"; exit 1; }
  local wall rss
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
  echo "$name $wall $rss" >> "$work/times"
}

drop() { sync; }
want() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }

for rep in $(seq 1 "$reps"); do
  # Cairn, local.
  if want cairn-local; then
  rm -rf "$work/local" "$XDG_CACHE_HOME"
  "$cairn" init --repo "$work/local" >/dev/null 2>&1
  drop; timed "cairn-local" "$cairn" --repo "$work/local" backup --no-progress "$corpus"
  fi

  # Cairn over HTTPS into the box, put token and put-only key.
  if want cairn-https; then
  rm -rf "$work/box-repo" "$work/state" "$XDG_CACHE_HOME" "$XDG_CONFIG_HOME/cairn/known_servers"
  "$cairn" init --repo "$work/box-repo" >/dev/null 2>&1
  rm -f "$work/put.key"
  "$cairn" --repo "$work/box-repo" key add --role put-only --no-password -o "$work/put.key" >/dev/null
  "$cairn" server --state "$work/state" token add bench --role put --repo box > "$work/token" 2>/dev/null
  hport=$((20000 + RANDOM % 20000))
  "$cairn" server --state "$work/state" --serve box="$work/box-repo" --listen 127.0.0.1:$hport 2> "$work/server.log" &
  server_pid=$!
  for _ in $(seq 100); do grep -q "tokens in" "$work/server.log" 2>/dev/null && break; sleep 0.1; done
  drop; timed "cairn-https" env -u CAIRN_PASSWORD "$cairn" --repo "https://127.0.0.1:$hport/box" \
    --token-file "$work/token" --key-file "$work/put.key" backup --no-progress "$corpus"
  srv_rss=$(grep VmHWM "/proc/$server_pid/status" | awk '{print $2}')
  echo "server-https 0 $srv_rss" >> "$work/times"
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
  fi

  # Cairn over ssh://, forced put role.
  if want cairn-ssh; then
  rm -rf "$work/ssh-repo" "$XDG_CACHE_HOME"
  "$cairn" init --repo "$work/ssh-repo" >/dev/null 2>&1
  rm -f "$work/ssh-put.key"
  "$cairn" --repo "$work/ssh-repo" key add --role put-only --no-password -o "$work/ssh-put.key" >/dev/null
  drop; timed "cairn-ssh" env -u CAIRN_PASSWORD CAIRN_SSH="ssh -i $ssh_dir/cairn $ssh_opts" "$cairn" \
    --repo "ssh://$user@127.0.0.1/ignored" --key-file "$work/ssh-put.key" backup --no-progress "$corpus"
  fi

  # restic over sftp to the same server, and locally.
  rm -rf "$work/restic-sftp" "$work/restic-local" "$XDG_CACHE_HOME"
  sftp_cmd="ssh -i $ssh_dir/sftp $ssh_opts $user@127.0.0.1 -s sftp"
  if want restic-sftp; then
  restic -r "sftp:$user@127.0.0.1:$work/restic-sftp" -o sftp.command="$sftp_cmd" init >/dev/null
  drop; timed "restic-sftp" restic -r "sftp:$user@127.0.0.1:$work/restic-sftp" -o sftp.command="$sftp_cmd" backup -q "$corpus"
  fi
  # The same, with ssh told to prefer AES-GCM as Cairn tells it (on a CPU
  # with AES): the cipher's share of the difference.
  if want restic-sftp-aes; then
  rm -rf "$work/restic-sftp"
  sftp_aes="ssh -i $ssh_dir/sftp $ssh_opts -c aes128-gcm@openssh.com $user@127.0.0.1 -s sftp"
  restic -r "sftp:$user@127.0.0.1:$work/restic-sftp" -o sftp.command="$sftp_aes" init >/dev/null
  drop; timed "restic-sftp-aes" restic -r "sftp:$user@127.0.0.1:$work/restic-sftp" -o sftp.command="$sftp_aes" backup -q "$corpus"
  fi
  if want restic-local; then
  restic -r "$work/restic-local" init >/dev/null
  drop; timed "restic-local" restic -r "$work/restic-local" backup -q "$corpus"
  fi
done

python3 - "$work/times" "$bytes" "$reps" "$("$cairn" --version)" "$(restic version | head -1)" > "$here/bench/server-results.md" <<'PY'
import sys, collections
times, size, reps, cv, rv = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
wall = collections.defaultdict(list); rss = collections.defaultdict(list)
for l in open(times):
    n, w, r = l.split()
    wall[n].append(float(w)); rss[n].append(int(r))
best = {n: min(v) for n, v in wall.items() if n != "server-https"}
peak = {n: max(v) for n, v in rss.items()}
mib = lambda k: k / 1024
tp = {n: size / best[n] / 2**20 for n in best}
print(f"# Backups into the box: bench/server.sh\n")
print(f"Initial backup of a {size / 2**30:.2f} GiB mixed corpus, best of {reps} runs each, all in one run; loopback; {cv}, {rv}.\n")
print("| client | wall s | MiB/s | peak client RSS MiB |")
print("|---|---|---|---|")
for n in ["cairn-local", "cairn-https", "cairn-ssh", "restic-sftp", "restic-sftp-aes", "restic-local"]:
    if n not in best:
        continue
    print(f"| {n} | {best[n]:.1f} | {tp[n]:.0f} | {mib(peak[n]):.0f} |")
if "server-https" in peak:
    print(f"\nServer (cairn server) peak RSS during the HTTPS backup: {mib(peak['server-https']):.0f} MiB.")
print("\n| ratio | value | bar |")
print("|---|---|---|")
rows = [
    ("HTTPS throughput / local", "cairn-https", "cairn-local", tp, ">= 0.8"),
    ("ssh:// throughput / local", "cairn-ssh", "cairn-local", tp, ""),
    ("Cairn HTTPS / restic sftp throughput", "cairn-https", "restic-sftp", tp, ">= 2"),
    ("Cairn ssh:// / restic sftp throughput", "cairn-ssh", "restic-sftp", tp, ">= 2"),
    ("Cairn ssh:// / restic sftp, both AES-GCM", "cairn-ssh", "restic-sftp-aes", tp, ""),
    ("Cairn HTTPS / restic sftp peak client RSS", "cairn-https", "restic-sftp", peak, "<= 0.5"),
    ("Cairn ssh:// / restic sftp peak client RSS", "cairn-ssh", "restic-sftp", peak, "<= 0.5"),
]
for label, a, b, d, bar in rows:
    if a in d and b in d:
        print(f"| {label} | {d[a] / d[b]:.2f} | {bar} |")
PY
cat "$here/bench/server-results.md"
