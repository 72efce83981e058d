#!/usr/bin/env bash
# peers.sh - measure backup tools side by side on the same corpus, same machine.
#
#   peers.sh [-s mixed|small|all] [-t "cairn restic borg-zstd3 borg-lz4 rustic"]
#            [-c CORPUS_DIR] [-z CORPUS_SIZE] [-m SMALLFILES_DIR] [-n SMALLFILES_COUNT]
#            [-w WORK_DIR] [-o OUT_DIR] [-p MUTATE_PERCENT] [-k]
#
# Defaults: -s all, every tool below that is installed, -c /tmp/bench/corpus
# (made with make-corpus.sh at -z 3GiB if absent), -m /tmp/bench/smallfiles
# (200000 files), -w /tmp/bench/work, -o ./bench/peers (give an absolute path), -p 2.
# -k keeps repositories and restores (otherwise deleted after each tool).
# Password: $BENCH_PASSWORD (default below). Per-step timeout: $STEP_TIMEOUT s.
#
# Scenario "mixed", per tool: copy the pristine corpus to WORK/src (same path
# for every tool, so snapshots look alike), read it once to warm the page
# cache, then time: init, backup-initial, backup-nochange, (mutate-corpus.sh
# PCT, untimed) backup-mutated, restore (latest) to an empty dir, check (with
# data read). The restore is compared with WORK/src by verify-restore.py
# (bytes + metadata) and by rsync -c dry-run. Repo and cache sizes by du -sb.
# Scenario "small": init, backup-initial, backup-nochange, restore (+verify)
# on the many-small-files corpus.
#
# Results: OUT/raw/<scenario>/<tool>/<step>.time (GNU time -v), results.tsv,
# verify.txt, and OUT/anchors-results.md rebuilt from everything under raw/.
#
# ADDING A TOOL: write one function tool_<name> below (dashes in the name
# become underscores) answering the sub-commands available, version, init,
# backup, restore, restored_root and check. Commands to be measured are run
# through `timed`. Variables you can use: $REPO (fresh dir path, not yet
# created), $SRC (what to back up), $DEST (empty dir to restore into),
# $BACKUP_NO (1, 2, 3 ...), $BENCH_PASSWORD. Then pass -t "... <name>".

set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

SCENARIOS=all
TOOLS=""
CORPUS=/tmp/bench/corpus
CORPUS_SIZE=3GiB
SMALL=/tmp/bench/smallfiles
SMALL_COUNT=200000
WORK=/tmp/bench/work
OUT=$PWD/bench/peers
PCT=2
KEEP=0
MUTATE_SEED=7
: "${BENCH_PASSWORD:=bench-password-not-a-secret}"
: "${STEP_TIMEOUT:=3600}"
export BENCH_PASSWORD

while getopts "s:t:c:z:m:n:w:o:p:kh" opt; do
  case $opt in
    s) SCENARIOS=$OPTARG ;; t) TOOLS=$OPTARG ;; c) CORPUS=$OPTARG ;; z) CORPUS_SIZE=$OPTARG ;;
    m) SMALL=$OPTARG ;; n) SMALL_COUNT=$OPTARG ;; w) WORK=$OPTARG ;; o) OUT=$OPTARG ;;
    p) PCT=$OPTARG ;; k) KEEP=1 ;;
    *) sed -n '2,35p' "$0"; exit 2 ;;
  esac
done
case $WORK in /tmp/*) ;; *) echo "work dir must be under /tmp" >&2; exit 2 ;; esac

# ----------------------------------------------------------------------------
# tool entries
# ----------------------------------------------------------------------------
tool_restic() {
  export RESTIC_PASSWORD=$BENCH_PASSWORD
  case $1 in
    available) command -v restic >/dev/null ;;
    version) restic version ;;
    init) timed restic -r "$REPO" init --repository-version 2 ;;
    backup) timed restic -r "$REPO" --compression auto backup --host bench "$SRC" ;;
    restore) timed restic -r "$REPO" restore latest --target "$DEST" ;;
    restored_root) echo "$DEST$SRC" ;;
    check) timed restic -r "$REPO" check --read-data ;;
  esac
}

# borg 1.2: repokey = AES-CTR + HMAC-SHA256 (this CPU has AES-NI and SHA-NI)
_borg() {  # $BORG_COMP selects the compression
  export BORG_PASSPHRASE=$BENCH_PASSWORD BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
  case $1 in
    available) command -v borg >/dev/null ;;
    version) borg --version ;;
    init) timed borg init --encryption repokey "$REPO" ;;
    backup) timed borg create --compression "$BORG_COMP" "$REPO::snap-$BACKUP_NO" "$SRC" ;;
    restore) (cd "$DEST" && timed borg extract --sparse "$REPO::snap-$BACKUP_NO") ;;
    restored_root) echo "$DEST$SRC" ;;
    check) timed borg check --verify-data "$REPO" ;;
  esac
}
tool_borg_zstd3() { BORG_COMP=zstd,3 _borg "$@"; }
tool_borg_lz4() { BORG_COMP=lz4 _borg "$@"; }

RUSTIC_BIN=${RUSTIC_BIN:-$(command -v rustic || echo rustic)}
tool_rustic() {
  export RUSTIC_PASSWORD=$BENCH_PASSWORD
  case $1 in
    available) [[ -x $RUSTIC_BIN ]] ;;
    version) "$RUSTIC_BIN" --version ;;
    init) timed "$RUSTIC_BIN" -r "$REPO" init ;;
    backup) timed "$RUSTIC_BIN" -r "$REPO" backup --host bench "$SRC" ;;
    restore) timed "$RUSTIC_BIN" -r "$REPO" restore latest "$DEST" ;;
    restored_root) echo "$DEST$SRC" ;;
    check) timed "$RUSTIC_BIN" -r "$REPO" check --read-data ;;
  esac
}

# Cairn: the binary from $CAIRN_BIN, else `cairn` on PATH, else ./target/release/cairn
# (run peers.sh from the project root after `cargo build --release`).
CAIRN_BIN=${CAIRN_BIN:-$(command -v cairn || echo "$PWD/target/release/cairn")}
tool_cairn() {
  export CAIRN_PASSWORD=$BENCH_PASSWORD
  case $1 in
    available) [[ -x $CAIRN_BIN ]] ;;
    version) "$CAIRN_BIN" --version ;;
    init) timed "$CAIRN_BIN" init --repo "$REPO" ;;
    backup) timed "$CAIRN_BIN" backup --repo "$REPO" "$SRC" ;;
    restore) timed "$CAIRN_BIN" restore --repo "$REPO" latest "$DEST" ;;
    restored_root) echo "$DEST$SRC" ;;
    check) timed "$CAIRN_BIN" check --repo "$REPO" --read-data ;;
  esac
}

ALL_TOOLS="cairn restic borg-zstd3 borg-lz4 rustic"

# ----------------------------------------------------------------------------
# machinery
# ----------------------------------------------------------------------------
tool() { local f="tool_${TOOL//-/_}"; "$f" "$@"; }

# timed CMD...: run CMD under GNU time -v; record wall/user/sys/maxrss/exit
timed() {
  local tf="$RAWT/$STEP.time" lf="$LOGT/$STEP.log"
  /usr/bin/time -v -o "$tf" timeout "$STEP_TIMEOUT" "$@" >"$lf" 2>&1
  local rc=$?
  tail -n 15 "$lf" | cut -c1-300 >"$RAWT/$STEP.log-tail"
  awk -v scen="$SCEN" -v tool="$TOOL" -v step="$STEP" -v rc="$rc" '
    /Elapsed \(wall clock\)/ { n = split($NF, p, ":"); w = 0; for (i = 1; i <= n; i++) w = w * 60 + p[i] }
    /User time \(seconds\)/ { u = $NF } /System time \(seconds\)/ { s = $NF }
    /Maximum resident set size/ { r = $NF }
    END { printf "%s\t%s\t%s\t%.2f\t%.2f\t%.2f\t%d\t%d\n", scen, tool, step, w, u, s, r, rc }
  ' "$tf" >>"$TSV"
  [[ $rc == 0 ]] || echo "    ! $STEP exited $rc (see $lf)" >&2
  return $rc
}

note() { printf '%s\t%s\t%s\t%s\n' "$SCEN" "$TOOL" "$1" "$2" >>"$RAWS/facts.tsv"; }
say() { echo "[$(date +%H:%M:%S)] $*" >&2; }

warm() {  # one read of every regular file (not FIFOs!) so every tool starts warm
  find "$1" -type f -print0 | xargs -0 cat >/dev/null 2>&1
  find "$1" >/dev/null
}

step() {  # step NAME SUBCOMMAND: sync (untimed), then the measured tool sub-command
  STEP=$1; sync; say "  $TOOL $STEP"; tool "$2"
}

verify() {  # compare the restore of $SRC
  local root; root=$(tool restored_root)
  python3 "$HERE/verify-restore.py" "$SRC" "$root" --details "$RAWT/verify-details.txt" >"$RAWT/verify.txt"
  note verify_rc $?
  if [[ $SCEN == mixed ]]; then
    rsync -rlpgoDcn --delete --itemize-changes "$SRC/" "$root/" >"$LOGT/rsync.txt" 2>&1
    note rsync_rc $?
    note rsync_diff_lines "$(wc -l <"$LOGT/rsync.txt")"
    head -n 50 "$LOGT/rsync.txt" | cut -c1-300 >"$RAWT/rsync-head.txt"
  fi
  say "  verify: $(cut -c1-200 "$RAWT/verify.txt")"
}

run_tool() {  # run_tool SCENARIO TOOL SOURCE_CORPUS
  SCEN=$1 TOOL=$2
  local corpus=$3 tdir="$WORK/$SCEN-$TOOL"
  RAWS="$OUT/raw/$SCEN" RAWT="$OUT/raw/$SCEN/$TOOL" LOGT="$WORK/logs/$SCEN/$TOOL"
  TSV="$RAWS/results.tsv"
  rm -rf "$tdir" "$RAWT" "$LOGT"; mkdir -p "$tdir" "$RAWT" "$LOGT"
  # forget earlier rows of this scenario+tool
  [[ -f $TSV ]] && { grep -v -P "^$SCEN\t$TOOL\t" "$TSV" >"$TSV.tmp"; mv "$TSV.tmp" "$TSV"; }
  [[ -f $RAWS/facts.tsv ]] && { grep -v -P "^$SCEN\t$TOOL\t" "$RAWS/facts.tsv" >"$RAWS/f.tmp"; mv "$RAWS/f.tmp" "$RAWS/facts.tsv"; }
  REPO="$tdir/repo" DEST="$tdir/restore"
  export XDG_CACHE_HOME="$tdir/cache" XDG_CONFIG_HOME="$tdir/config"
  mkdir -p "$XDG_CACHE_HOME" "$XDG_CONFIG_HOME"
  if [[ $SCEN == mixed ]]; then
    SRC="$WORK/src"
    say "$TOOL: copying pristine corpus to $SRC"
    rm -rf "$SRC"; cp -a "$corpus" "$SRC"
  else
    SRC=$corpus
  fi
  say "$TOOL: warming page cache"; warm "$SRC"

  step init init || { say "$TOOL: init failed, skipping"; return; }
  BACKUP_NO=1; step backup-initial backup
  sync; note repo_bytes_initial "$(du -sb "$REPO" | cut -f1)"
  BACKUP_NO=2; step backup-nochange backup
  if [[ $SCEN == mixed ]]; then
    say "  mutating $PCT%"
    "$HERE/mutate-corpus.sh" "$SRC" "$PCT" "$MUTATE_SEED" >"$RAWT/mutation.txt"
    BACKUP_NO=3; step backup-mutated backup
  fi
  rm -rf "$DEST"; mkdir -p "$DEST"
  step restore restore
  sync; verify
  [[ $SCEN == mixed ]] && step check check
  sync
  note repo_bytes_final "$(du -sb "$REPO" | cut -f1)"
  note cache_bytes "$(du -sb "$XDG_CACHE_HOME" | cut -f1)"
  note restore_bytes_du "$(du -sB1 "$DEST" | tail -1 | cut -f1)"
  if [[ $KEEP == 0 ]]; then rm -rf "$DEST" "$REPO" "$XDG_CACHE_HOME"; fi
}

# ----------------------------------------------------------------------------
main() {
  [[ -n $TOOLS ]] || TOOLS=$ALL_TOOLS
  mkdir -p "$OUT/raw" "$WORK/logs"
  local avail="" t
  for t in $TOOLS; do
    TOOL=$t
    if declare -F "tool_${t//-/_}" >/dev/null && tool available; then avail+=" $t"; else say "skip $t: not available"; fi
  done
  { echo "date: $(date -u +%FT%TZ)"; echo "host: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(uname -r)";
    grep -m1 'model name' /proc/cpuinfo; df -T /tmp | tail -1 | awk '{print "fs: " $2}'
    for t in $avail; do TOOL=$t; echo "$t: $(tool version 2>&1 | head -1)"; done; } >"$OUT/raw/versions.txt"

  if [[ $SCENARIOS == all || $SCENARIOS == mixed ]]; then
    if [[ ! -d $CORPUS ]]; then say "making corpus $CORPUS ($CORPUS_SIZE)"; "$HERE/make-corpus.sh" "$CORPUS" "$CORPUS_SIZE" >/dev/null; fi
    mkdir -p "$OUT/raw/mixed"; cp "$CORPUS.manifest" "$OUT/raw/mixed/corpus-manifest.txt" 2>/dev/null
    for t in $avail; do say "=== mixed: $t"; run_tool mixed "$t" "$CORPUS"; done
    rm -rf "$WORK/src"
  fi
  if [[ $SCENARIOS == all || $SCENARIOS == small ]]; then
    if [[ ! -d $SMALL ]]; then say "making $SMALL ($SMALL_COUNT files)"; "$HERE/make-corpus.sh" --smallfiles "$SMALL" "$SMALL_COUNT" >/dev/null; fi
    mkdir -p "$OUT/raw/small"; cp "$SMALL.manifest" "$OUT/raw/small/corpus-manifest.txt" 2>/dev/null
    for t in $avail; do say "=== small: $t"; run_tool small "$t" "$SMALL"; done
  fi
  python3 "$HERE/report.py" "$OUT"
  say "wrote $OUT/anchors-results.md"
}
main
