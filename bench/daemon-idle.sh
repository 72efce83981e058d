#!/usr/bin/env bash
# What an idle `cairn daemon` costs: resident memory and CPU time with 20
# jobs configured and none due. Target: RSS <= 16 MiB, CPU <= 1 s per idle
# hour.
#
# Inits a repository in a fresh /tmp/bench/daemon-idle.XXXXXX, writes a
# config of 20 jobs (8 backups every 1d of small directories, 4 command
# jobs at 02:30, 2 retention, 2 prune, 1 check and 2 verify jobs every 1w,
# and one backup with when = "mounted" on a disk that is not there, probed
# every 10 s by default), starts `cairn daemon -c FILE` and waits until the
# first runs are over (interval jobs that never ran are due at once),
# then samples the daemon's /proc files every SAMPLE seconds for IDLE_SECS
# seconds: VmRSS (its maximum over the window is the figure), VmHWM (the
# peak since start, first runs included), utime+stime (CPU, extrapolated
# to an hour), read syscalls and context switches of all its threads.
#   bench/daemon-idle.sh                     # 300 s idle window (about 6 min in all)
#   IDLE_SECS=60 bench/daemon-idle.sh        # a quick try
#   CAIRN_BIN=/tmp/cairn-b bench/daemon-idle.sh
# Builds with `cargo build --release -p cairn-cli` unless CAIRN_BIN is set
# (honours CARGO_TARGET_DIR). Writes bench/daemon-results.md. Never run
# while something else builds: a busy machine inflates CPU time.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
idle=${IDLE_SECS:-300}
sample=${SAMPLE:-5}
jobs_n=20
if [ -n "${CAIRN_BIN:-}" ]; then
  cairn=$CAIRN_BIN
else
  cargo build --release -q -p cairn-cli
  cairn=${CARGO_TARGET_DIR:-$here/target}/release/cairn
fi
say() { echo "[$(date +%H:%M:%S)] $*" >&2; }
# One measurement at a time (two idle daemons would share the CPU figure),
# each in its own directory (a second run must not delete the first's).
mkdir -p /tmp/bench
exec 9> /tmp/bench/daemon-idle.lock
flock -n 9 || { echo "another bench/daemon-idle.sh is running; wait for it to end" >&2; exit 1; }
w=$(mktemp -d /tmp/bench/daemon-idle.XXXXXX)

pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$w"
}
trap cleanup EXIT

mkdir -p "$w/home" "$w/src"
export HOME=$w/home XDG_CACHE_HOME=$w/home/.cache XDG_CONFIG_HOME=$w/home/.config
export XDG_STATE_HOME=$w/home/.local/state XDG_DATA_HOME=$w/home/.local/share
unset CAIRN_CONFIG CAIRN_REPO CAIRN_PASSWORD_FILE
printf 'bench\n' > "$w/passphrase"
CAIRN_PASSWORD=bench "$cairn" init --repo "$w/repo" >/dev/null 2>&1

# Sources: eight small directories of 50 files each.
for i in 1 2 3 4 5 6 7 8; do
  mkdir -p "$w/src/s$i"
  for f in $(seq 1 50); do head -c $((f * 97)) /dev/urandom > "$w/src/s$i/f$f"; done
done

cfg=$w/cairn.toml
{
  cat <<EOF
[daemon]
state = "$w/state"
listen = "off"
max_concurrent = 2

[repository.main]
path = "$w/repo"
password_file = "$w/passphrase"

[repository.usb]
path = "$w/usb/cairn"
password_file = "$w/passphrase"
require_mount = "$w/usb"
EOF
  for i in 1 2 3 4 5 6 7 8; do
    printf '\n[[job]]\nname = "backup-%s"\nkind = "backup"\nrepository = "main"\npaths = ["%s"]\nevery = "1d"\n' "$i" "$w/src/s$i"
  done
  for i in 1 2 3 4; do
    printf '\n[[job]]\nname = "dump-%s"\nkind = "command"\nrepository = "main"\ncommand = ["echo", "dump %s"]\nfilename = "dump-%s.txt"\nat = "02:30"\n' "$i" "$i" "$i"
  done
  for i in 1 2; do
    printf '\n[[job]]\nname = "retention-%s"\nkind = "retention"\nrepository = "main"\nkeep = { daily = 7, weekly = 4 }\nevery = "1w"\n' "$i"
    printf '\n[[job]]\nname = "prune-%s"\nkind = "prune"\nrepository = "main"\nevery = "1w"\n' "$i"
    printf '\n[[job]]\nname = "verify-%s"\nkind = "verify"\nrepository = "main"\nevery = "1w"\n' "$i"
  done
  printf '\n[[job]]\nname = "check"\nkind = "check"\nrepository = "main"\nevery = "1w"\n'
  printf '\n[[job]]\nname = "usb"\nkind = "backup"\nrepository = "usb"\npaths = ["%s"]\nwhen = "mounted"\n' "$w/src/s1"
} > "$cfg"
"$cairn" daemon --check-config -c "$cfg" >&2
[ "$(grep -c '^\[\[job\]\]' "$cfg")" = "$jobs_n" ] || { echo "expected $jobs_n jobs" >&2; exit 1; }

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
"$cairn" daemon -c "$cfg" 2> "$w/daemon.log" &
pid=$!
say "daemon $pid started; waiting for the first runs"

# The first runs: every interval job once (15 of them), then nothing runs.
t0=$(date +%s)
while :; do
  kill -0 "$pid" 2>/dev/null || { echo "the daemon died:" >&2; cat "$w/daemon.log" >&2; exit 1; }
  # status exits 1 (WARNING) while jobs have never run: read its JSON only.
  "$cairn" status --json -c "$cfg" > "$w/status.json" 2>/dev/null || true
  if python3 - "$w/status.json" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
interval = [j for j in v["jobs"] if j["kind"] != "command" and j["name"] != "usb"]
busy = [j for j in v["jobs"] if j["state"] == "running"]
done = all(j["last_run_ns"] is not None for j in interval)
sys.exit(0 if v["daemon_running"] and done and not busy else 1)
PY
  then break; fi
  [ $(( $(date +%s) - t0 )) -lt 600 ] || { echo "first runs not over after 600 s" >&2; cat "$w/daemon.log" >&2; exit 1; }
  sleep 1
done
first_runs=$(( $(date +%s) - t0 ))
failed=$(python3 -c '
import json, sys
v = json.load(open(sys.argv[1]))
print(" ".join(j["name"] for j in v["jobs"] if j["state"] not in ("idle", "never run")))' "$w/status.json")
say "first runs over in ${first_runs}s${failed:+; not ok: $failed}"
# Nothing may fall due in the window (a calendar job at 02:30 would).
end_ns=$(( ($(date +%s) + idle + 60) * 1000000000 ))
due_in_window=$(python3 -c '
import json, sys
v = json.load(open(sys.argv[1])); end = int(sys.argv[2])
print(" ".join(j["name"] for j in v["jobs"] if j["next_run_ns"] is not None and j["next_run_ns"] < end))' "$w/status.json" "$end_ns")
[ -z "$due_in_window" ] || say "warning: due during the window: $due_in_window"
sleep 5   # let the last run's thread be reaped

tck=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
# The same in nanoseconds, from the scheduler (live threads only: enough
# once the first runs' threads are gone), for a finer figure than ticks.
cpu_ns() { cat /proc/"$pid"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%d", s}'; }
kib() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$pid/status"; }
# Summed over the daemon's threads (a thread's own counters).
ctxt() { cat /proc/"$pid"/task/*/status 2>/dev/null | awk '/^(non)?voluntary_ctxt_switches/ {s += $2} END {print s}'; }
syscr() { awk '$1 == "syscr:" {print $2}' "/proc/$pid/io"; }
# The whole machine's busy and total ticks: was anything else running?
machine() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }

read -r busy0 total0 < <(machine)
cpu0=$(cpu); ns0=$(cpu_ns); ctxt0=$(ctxt); syscr0=$(syscr); runs0=$(grep -c ': started' "$w/daemon.log" || true)
rss_max=0; rss_min=
say "sampling for ${idle}s"
t=0
while [ "$t" -lt "$idle" ]; do
  sleep "$sample"; t=$((t + sample))
  r=$(kib VmRSS)
  [ "$r" -gt "$rss_max" ] && rss_max=$r
  { [ -z "$rss_min" ] || [ "$r" -lt "$rss_min" ]; } && rss_min=$r
done
read -r busy1 total1 < <(machine)
cpu1=$(cpu); ns1=$(cpu_ns); ctxt1=$(ctxt); syscr1=$(syscr); runs1=$(grep -c ': started' "$w/daemon.log" || true)
if [ ! -f "$w/daemon.log" ] || [ ! -d "$w/state/jobs" ]; then
  echo "$w was removed during the window (a cleanup of /tmp/bench?): the figures are void; run again" >&2
  exit 1
fi
hwm=$(kib VmHWM); threads=$(kib Threads)
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=

python3 - "$here/bench/daemon-results.md" <<PY
import datetime, os, subprocess, sys
idle, tck = $idle, $tck
cpu = ($cpu1 - $cpu0) / tck
per_hour = cpu * 3600 / idle
sched = ($ns1 - $ns0) / 1e9
rss, rss_min, hwm = $rss_max / 1024, $rss_min / 1024, $hwm / 1024
ok = lambda good: "ok" if good else "MISSED"
rows = [
    ("RSS over the idle window (max of samples)", f"{rss:.1f} MiB (min {rss_min:.1f})", f"<= 16 MiB {ok(rss <= 16)}"),
    ("VmHWM, peak since start (first runs included)", f"{hwm:.1f} MiB", "-"),
    ("CPU over the idle window, utime+stime", f"{cpu:.2f} s in {idle} s", "-"),
    ("CPU per idle hour, utime+stime (extrapolated)", f"{per_hour:.2f} s", f"<= 1 s {ok(per_hour <= 1)}"),
    ("CPU per idle hour, scheduler run time (ns resolution)", f"{sched * 3600 / idle:.2f} s", f"<= 1 s {ok(sched * 3600 / idle <= 1)}"),
    ("read syscalls per second", f"{($syscr1 - $syscr0) / idle:.0f}", "-"),
    ("context switches per second (all threads)", f"{($ctxt1 - $ctxt0) / idle:.1f}", "-"),
    ("threads at the end", "$threads", "-"),
    ("runs started during the window", f"{$runs1 - $runs0}", "0"),
]
version = subprocess.run(["$cairn", "--version"], capture_output=True, text=True).stdout.strip()
out = [
    "# Idle daemon: bench/daemon-idle.sh",
    "",
    f"{datetime.date.today().isoformat()}, {version}, {os.cpu_count()} cores, kernel {os.uname().release}.",
    f"20 jobs (8 backups every 1d, 4 command jobs at 02:30, 2 retention, 2 prune, 2 verify and 1 check every 1w, 1 backup when = \"mounted\" on an absent disk); first runs took $first_runs s; then {idle} s idle, sampled every $sample s.",
    f"Load average before: $load_before; after: $load_after; the whole machine was busy {100 * ($busy1 - $busy0) / max(1, $total1 - $total0):.1f}% of the window (all cores; other processes included).",
    "",
    "| figure | value | target |",
    "|---|---|---|",
] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
if "$due_in_window" or "$failed":
    out += ["", f"Caveats: due in the window: {'$due_in_window' or 'none'}; first runs not ok: {'$failed' or 'none'}."]
text = "\n".join(out) + "\n"
open(sys.argv[1], "w").write(text)
print(text, end="")
PY
