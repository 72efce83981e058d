#!/usr/bin/env python3
"""Turns bench/peers/raw (written by bench/peers.sh) into the ratio table
of bench/results.md: Cairn against restic and borg, measured in the same
run, with the bar (target) for each ratio. Cairn's wall time over
restic's: on the mixed corpus at most 0.35 for the first backup and the
restore, 0.25 for a no-change backup, 0.5 for the mutated backup and check;
on small files at most 0.5 for the first backup and 0.25 for a no-change
backup (no bar for their restore, nor for init). Repository size at most
1.05x borg's (zstd,3); Cairn's peak memory at most 64 MiB over every step,
growing less than 25% from 200k to 1M small files.

  bench/ratios.py bench/peers [bench/peers-200k bench/peers-1m] > bench/results.md

The optional pair of directories holds Cairn-only runs on 200k and 1M small
files (same binary, back to back) for the memory-scaling figure.
"""
import csv
import os
import sys

OUT = sys.argv[1]
RAW = os.path.join(OUT, "raw")
SCALE = sys.argv[2:4] if len(sys.argv) >= 4 else None

# (scenario, step, bar as a ratio to restic's wall time)
BARS = [
    ("mixed", "init", None),
    ("mixed", "backup-initial", 0.35),
    ("mixed", "backup-nochange", 0.25),
    ("mixed", "backup-mutated", 0.5),
    ("mixed", "restore", 0.35),
    ("mixed", "check", 0.5),
    ("small", "init", None),
    ("small", "backup-initial", 0.5),
    ("small", "backup-nochange", 0.25),
    ("small", "restore", None),
]


def rows(scen):
    p = os.path.join(RAW, scen, "results.tsv")
    if not os.path.exists(p):
        return {}
    with open(p) as f:
        return {(r[1], r[2]): r for r in csv.reader(f, delimiter="\t") if r}


def facts(scen):
    p = os.path.join(RAW, scen, "facts.tsv")
    out = {}
    if os.path.exists(p):
        with open(p) as f:
            for r in csv.reader(f, delimiter="\t"):
                if r:
                    out.setdefault(r[1], {})[r[2]] = r[3]
    return out


def verify(scen, tool):
    p = os.path.join(RAW, scen, tool, "verify.txt")
    if not os.path.exists(p):
        return "-"
    kv = dict(t.split("=", 1) for t in open(p).read().split() if "=" in t)
    bad = [k for k in ("missing", "extra", "type", "content", "size", "mode", "owner", "mtime_file",
                       "mtime_dir", "mtime_symlink", "symlink_target", "xattr", "hardlink", "sparse", "rdev")
           if kv.get(k, "0") != "0"]
    return "identical" if not bad else "differs: " + ",".join(bad)


def main():
    print("# Cairn against restic and borg\n")
    print("Made by `bench/run.sh` (which runs `bench/peers.sh -t \"cairn restic borg-zstd3\"`")
    print("and this script); all tools in one run on the same machine, warm page cache.")
    print("Ratios are Cairn's wall time over restic's (lower is better); RSS is peak resident memory.\n")
    v = os.path.join(RAW, "versions.txt")
    if os.path.exists(v):
        print("```\n" + open(v).read().strip() + "\n```\n")
    print("| scenario | step | cairn s | restic s | borg-zstd3 s | cairn/restic | bar | cairn RSS MiB | restic RSS MiB | borg RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for scen, step, bar in BARS:
        r = rows(scen)
        c, re_, b = r.get(("cairn", step)), r.get(("restic", step)), r.get(("borg-zstd3", step))
        if not c:
            continue
        w = lambda x: float(x[3]) if x else None
        rss = lambda x: "%.0f" % (int(x[6]) / 1024) if x else "-"
        ratio = "%.2f" % (w(c) / w(re_)) if re_ and w(re_) > 0 else "-"
        ok = "" if bar is None or ratio == "-" else (" ok" if float(ratio) <= bar else " MISSED")
        flag = "" if c[7] == "0" else " (exit %s)" % c[7]
        print("| %s | %s | %.1f%s | %s | %s | %s | %s%s | %s | %s | %s |" % (
            scen, step, w(c), flag, "%.1f" % w(re_) if re_ else "-", "%.1f" % w(b) if b else "-",
            ratio, "-" if bar is None else "<= %.2f" % bar, ok, rss(c), rss(re_), rss(b)))
    print()
    for scen in ("mixed", "small"):
        f = facts(scen)
        if not f:
            continue
        line = "**%s**: repository bytes (final): " % scen + ", ".join(
            "%s %.0f MiB" % (t, int(f[t].get("repo_bytes_final", 0)) / 1048576) for t in f)
        if "cairn" in f and "borg-zstd3" in f:
            a, b = int(f["cairn"].get("repo_bytes_final", 0)), int(f["borg-zstd3"].get("repo_bytes_final", 1))
            line += "; cairn/borg-zstd3 = %.3f (bar <= 1.05)" % (a / b)
        print(line + ". Restores: " + ", ".join("%s %s" % (t, verify(scen, t)) for t in f) + ".\n")
    peak = []
    for scen in ("mixed", "small"):
        for (t, st), r in rows(scen).items():
            if t == "cairn":
                peak.append((int(r[6]) / 1024, scen, st))
    if peak:
        m = max(peak)
        print("Cairn's peak RSS over every step: %.0f MiB (%s %s); bar <= 64 MiB." % m)

    if SCALE:
        print("\n## Memory from 200k to 1M small files (Cairn only)\n")
        print("| step | 200k s | 1M s | 200k RSS MiB | 1M RSS MiB | growth |")
        print("|---|---|---|---|---|---|")
        runs = []
        for d in SCALE:
            p = os.path.join(d, "raw", "small", "results.tsv")
            with open(p) as f:
                runs.append({r[2]: r for r in csv.reader(f, delimiter="\t") if r and r[1] == "cairn"})
        peaks = [0, 0]
        for st in ("backup-initial", "backup-nochange", "restore"):
            a, b = runs[0].get(st), runs[1].get(st)
            if not a or not b:
                continue
            ra, rb = int(a[6]) / 1024, int(b[6]) / 1024
            peaks = [max(peaks[0], ra), max(peaks[1], rb)]
            print("| %s | %.1f | %.1f | %.0f | %.0f | %+.0f%% |" % (st, float(a[3]), float(b[3]), ra, rb, 100 * (rb / ra - 1)))
        print("\nPeak over the steps: %.0f MiB at 200k, %.0f MiB at 1M (%+.0f%%; bar < +25%%)." % (
            peaks[0], peaks[1], 100 * (peaks[1] / peaks[0] - 1)))


main()
