#!/usr/bin/env python3
"""Deterministic benchmark corpora for backup tools (no network, stdlib only).

Subcommands (see make-corpus.sh, make-corpus.sh --smallfiles and mutate-corpus.sh):

  make DIR [--size BYTES] [--seed N]
      Mixed "realistic" dataset of roughly SIZE bytes (default 3 GiB):
        src/      many small text files copied from this machine (/usr/include,
                  /usr/lib/python3*, /usr/share/doc, ...), ~14% of SIZE
        bin/      medium binaries copied from /usr/lib/x86_64-linux-gnu/*.so*,
                  ~14% of SIZE
        big/      two large files (SIZE/6 each) of mixed compressibility
                  (random, text-like, log-like, zero runs, repeated segments)
        dup/      an exact copy of big/big2.bin, a near-duplicate of
                  big/big1.bin (a few bytes inserted at 5 offsets), and exact
                  copies of some src/ and bin/ files
        special/  sparse file, hardlinks, symlinks (relative, absolute,
                  dangling, to dir), empty dirs, read-only dir, FIFO, odd
                  owner and modes, user xattr, names with spaces, non-UTF-8
                  bytes, UTF-8, a 255-byte name and a 40-level deep path
      Real files keep their on-disk mtimes; generated ones get deterministic
      mtimes with non-zero nanoseconds. A manifest is written to DIR.manifest.
      The system-file parts are deterministic for a given machine image (the
      list of files copied is recorded in the manifest with a digest).

  mutate DIR PERCENT [--seed N]
      Touch/modify ~PERCENT% of small files, append to one large file, insert
      bytes in the middle of another, delete a few files and add a few.

  smallfiles DIR [--count N] [--seed N]
      N files (default 200000) of 1-8 KiB in nested dirs (dir/NNN/NN/file).
"""
import argparse
import hashlib
import os
import stat
import struct
import random
import shutil
import stat
import sys

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
BASE_MTIME = 1_600_000_000  # 2020-09-13; generated files get mtimes after this

# 256-entry translation table giving English-ish letter frequencies.
_TEXT_ALPHABET = (
    b"eeeeeeeeeeeetttttttttaaaaaaaaoooooooiiiiiiinnnnnnnsssssshhhhhhrrrrrr"
    b"ddddlllllcccuuummmwwffggyyppbbvk" + b" " * 40 + b"\n" * 6 + b".,;:-'()0123456789"
    b"EETTAAOOIINNSSHHRR"
)
_TEXT_TABLE = bytes(_TEXT_ALPHABET[i % len(_TEXT_ALPHABET)] for i in range(256))

SYSTEM_TEXT_DIRS = [
    "/usr/include",
    "/usr/lib/python3.11",
    "/usr/lib/python3/dist-packages",
    "/usr/share/doc",
    "/usr/share/perl",
    "/usr/share/man",
    "/usr/share/locale",
    "/usr/share",
]
SYSTEM_BIN_DIR = "/usr/lib/x86_64-linux-gnu"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def fixed_mtime(rng):
    s = BASE_MTIME + rng.randrange(0, 3 * 365 * 86400)
    return s * 1_000_000_000 + rng.randrange(1, 1_000_000_000)


def set_mtime(path, ns, follow=True):
    os.utime(path, ns=(ns, ns), follow_symlinks=follow)


# --------------------------------------------------------------------------
# data generators
# --------------------------------------------------------------------------
class Gen:
    def __init__(self, rng):
        self.rng = rng
        # word pool for log-like, highly compressible data
        words = []
        for _ in range(4096):
            n = rng.randrange(2, 11)
            words.append(rng.randbytes(n).translate(_TEXT_TABLE).replace(b" ", b"x").replace(b"\n", b"y"))
        self.words = words
        lines = []
        total = 0
        while total < 256 * KiB:
            ln = b"%d-%02d-%02dT%02d:%02d:%02d host%d svc[%d]: " % (
                2024, rng.randrange(1, 13), rng.randrange(1, 29), rng.randrange(24),
                rng.randrange(60), rng.randrange(60), rng.randrange(8), rng.randrange(1, 65535))
            ln += b" ".join(rng.choice(words) for _ in range(rng.randrange(4, 16))) + b"\n"
            lines.append(ln)
            total += len(ln)
        self.pool = b"".join(lines)

    def random(self, n):
        return self.rng.randbytes(n)

    def text(self, n):
        return self.rng.randbytes(n).translate(_TEXT_TABLE)

    def loglike(self, n):
        out, have, pool, rng = [], 0, self.pool, self.rng
        while have < n:
            ln = rng.randrange(64, 4096)
            off = rng.randrange(0, len(pool) - ln)
            piece = pool[off:off + ln]
            out.append(piece)
            have += len(piece)
            if rng.random() < 0.3:  # sprinkle a little entropy
                out.append(b"%08x\n" % rng.getrandbits(32))
                have += 9
        return b"".join(out)[:n]


def write_mixed_file(path, size, rng, gen):
    """Segments of 256 KiB..8 MiB: random 35%, text 25%, log-like 20%,
    zeros 5%, repeat of an earlier segment 15%."""
    written = 0
    history = []  # (offset, length) of earlier segments
    with open(path, "wb") as f:
        while written < size:
            seg = min(rng.randrange(256 * KiB, 8 * MiB), size - written)
            kind = rng.random()
            if kind < 0.15 and history:
                off, ln = rng.choice(history)
                ln = min(ln, seg)
                f.flush()
                with open(path, "rb") as r:
                    r.seek(off)
                    data = r.read(ln)
            elif kind < 0.50:
                data = gen.random(seg)
            elif kind < 0.75:
                data = gen.text(seg)
            elif kind < 0.95:
                data = gen.loglike(seg)
            else:
                data = bytes(seg)
            f.write(data)
            history.append((written, len(data)))
            written += len(data)


def copy_with_insertions(src, dst, inserts):
    """Copy src to dst inserting bytes at given (offset, data) positions."""
    inserts = sorted(inserts)
    with open(src, "rb") as r, open(dst, "wb") as w:
        pos = 0
        for off, data in inserts:
            remaining = off - pos
            while remaining > 0:
                buf = r.read(min(remaining, 8 * MiB))
                if not buf:
                    break
                w.write(buf)
                remaining -= len(buf)
                pos += len(buf)
            w.write(data)
        shutil.copyfileobj(r, w, 8 * MiB)


# --------------------------------------------------------------------------
# make
# --------------------------------------------------------------------------
def list_system_files(roots, exclude_prefixes=()):
    """Sorted (relpath_under_root, abspath, is_symlink) of regular files and
    symlinks under the roots, deduplicated across overlapping roots."""
    seen = set()
    out = []
    for root in roots:
        if not os.path.isdir(root):
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            if any(dirpath.startswith(p) for p in exclude_prefixes):
                dirnames[:] = []
                continue
            for fn in sorted(filenames):
                p = os.path.join(dirpath, fn)
                if p in seen:
                    continue
                seen.add(p)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                    out.append((p, st))
    return out


def copy_tree_budget(files, dst_root, budget, strip_prefix="/"):
    """Copy files in the given order, skipping regular files that would
    overflow the byte budget, until 98% of it is used; symlinks are
    recreated as they are."""
    used = 0
    nfiles = nlinks = 0
    h = hashlib.sha256()
    for p, st in files:
        if used >= budget * 0.98:
            break
        if stat.S_ISREG(st.st_mode) and used + st.st_size > budget:
            continue  # does not fit; smaller files later in the list may
        rel = os.path.relpath(p, strip_prefix)
        d = os.path.join(dst_root, rel)
        os.makedirs(os.path.dirname(d), exist_ok=True)
        try:
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(p), d)
                set_mtime(d, st.st_mtime_ns, follow=False)
                nlinks += 1
            else:
                shutil.copyfile(p, d)
                os.chmod(d, stat.S_IMODE(st.st_mode) & 0o7777)
                set_mtime(d, st.st_mtime_ns)
                used += st.st_size
                nfiles += 1
        except OSError as e:
            log("skip", p, e)
            continue
        h.update(b"%s %d %d\n" % (rel.encode(), st.st_size, st.st_mtime_ns))
    return used, nfiles, nlinks, h.hexdigest()


def fix_dir_mtimes(root, rng):
    """Deterministic mtimes for every directory (post-order)."""
    dirs = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames.sort()
        dirs.append(dirpath)
    for d in sorted(dirs, key=lambda x: -x.count("/")):
        if os.path.islink(d):
            continue
        set_mtime(d, fixed_mtime(rng))


def make_special(root, rng, gen, src_sample, bin_sample):
    S = os.path.join(root, "special")
    os.makedirs(S)
    notes = []

    def wfile(rel, data, mode=0o644):
        p = os.path.join(S, rel) if isinstance(rel, str) else os.path.join(S.encode(), rel)
        parent = os.path.dirname(p)
        os.makedirs(parent, exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, mode)
        set_mtime(p, fixed_mtime(rng))
        return p

    # sparse file: 1 GiB apparent, 4 MiB of data in 4 extents
    sp = os.path.join(S, "sparse.img")
    with open(sp, "wb") as f:
        for off in (0, 100 * MiB, 500 * MiB, GiB - MiB):
            f.seek(off)
            f.write(gen.random(MiB))
        f.truncate(GiB)
    set_mtime(sp, fixed_mtime(rng))
    notes.append("sparse.img: 1 GiB apparent, 4 MiB allocated")

    # hardlinks: a text file linked 3 times (3 dirs), a binary linked twice
    t = wfile("hardlinks/a/original.txt", gen.text(20 * KiB))
    os.makedirs(os.path.join(S, "hardlinks/b"), exist_ok=True)
    os.makedirs(os.path.join(S, "hardlinks/c"), exist_ok=True)
    os.link(t, os.path.join(S, "hardlinks/b/link1.txt"))
    os.link(t, os.path.join(S, "hardlinks/c/link 2 with space.txt"))
    b = wfile("hardlinks/a/blob.bin", gen.random(3 * MiB), 0o755)
    os.link(b, os.path.join(S, "hardlinks/b/blob-link.bin"))
    notes.append("hardlinks: 2 groups (3 names, 2 names)")

    # symlinks
    L = os.path.join(S, "symlinks")
    os.makedirs(L)
    wfile("symlinks/target.txt", gen.text(1000))
    os.symlink("target.txt", os.path.join(L, "rel-to-file"))
    os.symlink("../hardlinks", os.path.join(L, "rel-to-dir"))
    os.symlink("/etc/hostname", os.path.join(L, "absolute"))
    os.symlink("does/not/exist", os.path.join(L, "dangling"))
    os.symlink("loop-b", os.path.join(L, "loop-a"))
    os.symlink("loop-a", os.path.join(L, "loop-b"))
    for n in ("rel-to-file", "rel-to-dir", "absolute", "dangling", "loop-a", "loop-b"):
        set_mtime(os.path.join(L, n), fixed_mtime(rng), follow=False)
    notes.append("symlinks: 6 (relative file/dir, absolute, dangling, 2-loop)")

    # empty dirs, nested empty, read-only dir with content, 0700 dir
    for d in ("empty", "empty-nested/a/b/c", "empty with space"):
        os.makedirs(os.path.join(S, d))
    wfile("readonly-dir/inside.txt", gen.text(500))
    os.chmod(os.path.join(S, "readonly-dir"), 0o555)
    wfile("private-dir/secret.txt", gen.text(300), 0o600)
    os.chmod(os.path.join(S, "private-dir"), 0o700)

    # modes, owners, setgid/sticky
    wfile("modes/exec.sh", b"#!/bin/sh\necho hi\n", 0o755)
    wfile("modes/readonly.txt", gen.text(100), 0o444)
    wfile("modes/setgid-file", gen.text(100), 0o2755)
    os.makedirs(os.path.join(S, "modes/sticky-dir"))
    os.chmod(os.path.join(S, "modes/sticky-dir"), 0o1777)
    p = wfile("modes/owned-1234-5678.txt", gen.text(100), 0o640)
    os.chown(p, 1234, 5678)
    os.makedirs(os.path.join(S, "modes/dir-owned-4321"))
    os.chown(os.path.join(S, "modes/dir-owned-4321"), 4321, 4321)

    # xattr
    p = wfile("xattr/with-xattr.txt", gen.text(100))
    try:
        os.setxattr(p, "user.bench.comment", b"hello xattr")
        os.setxattr(p, "user.bench.binary", bytes(range(32)))
        set_mtime(p, fixed_mtime(rng))
        notes.append("xattr: 2 user.* attributes on one file")
    except OSError as e:
        notes.append("xattr: unsupported here (%s)" % e)

    # POSIX ACL (binary xattr: version 2, then tag u16, perm u16, id u32 per entry)
    p = wfile("xattr/with-acl.txt", gen.text(100), 0o640)
    acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", t, perm, i) for t, perm, i in (
        (0x01, 6, 0xFFFFFFFF), (0x02, 4, 1234), (0x04, 4, 0xFFFFFFFF), (0x10, 4, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF)))
    try:
        os.setxattr(p, "system.posix_acl_access", acl)
        set_mtime(p, fixed_mtime(rng))
        notes.append("acl: one file with a named-user POSIX ACL")
    except OSError as e:
        notes.append("acl: unsupported here (%s)" % e)

    # device node (root only)
    dev = os.path.join(S, "devices", "null-like")
    os.makedirs(os.path.dirname(dev), exist_ok=True)
    try:
        os.mknod(dev, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        set_mtime(dev, fixed_mtime(rng))
        notes.append("devices: one character device node (1,3)")
    except OSError as e:
        notes.append("devices: not made (%s)" % e)

    # FIFO
    fifo = os.path.join(S, "fifo")
    os.mkfifo(fifo, 0o644)
    set_mtime(fifo, fixed_mtime(rng))

    # names
    wfile("names/file with spaces.txt", gen.text(200))
    wfile("names/dir with spaces/inner file.txt", gen.text(200))
    wfile(b"names/latin1-caf\xe9.txt", gen.text(200))
    wfile(b"names/bad-\xff\xfe-dir/inside-\x80.bin", gen.random(300))
    wfile("names/utf8-café-日本語-🙂.txt", gen.text(200))
    wfile("names/-leading-dash", gen.text(50))
    wfile("names/back\\slash", gen.text(50))
    wfile("names/" + "L" * 251 + ".txt", gen.text(50))  # 255-byte name
    deep = "/".join("d%02d" % i for i in range(40))
    wfile("names/deep/" + deep + "/bottom.txt", gen.text(50))
    notes.append("names: spaces, latin-1 (non-UTF-8), 0xff/0xfe/0x80 bytes, UTF-8, leading dash, backslash, 255-byte name, 40-level path")

    # zero-length files and tiny files
    wfile("tiny/empty-file", b"")
    for i in range(20):
        wfile("tiny/t%02d" % i, gen.text(rng.randrange(1, 64)))

    # exact duplicates of a few src/bin files inside special/
    for i, p in enumerate(src_sample[:3] + bin_sample[:2]):
        shutil.copyfile(p, os.path.join(S, "hardlinks", "dup-%d" % i))
        set_mtime(os.path.join(S, "hardlinks", "dup-%d" % i), fixed_mtime(rng))
    return notes


def cmd_make(a):
    root = os.path.abspath(a.dir)
    if os.path.exists(root) and os.listdir(root):
        sys.exit("make: %s exists and is not empty" % root)
    os.makedirs(root, exist_ok=True)
    rng = random.Random(a.seed)
    gen = Gen(random.Random(a.seed + 1))
    size = a.size
    manifest = ["target_size=%d seed=%d" % (size, a.seed)]

    # (a) source tree
    log("src: listing system text files")
    files = list_system_files(SYSTEM_TEXT_DIRS, exclude_prefixes=("/usr/share/doc-base",))
    files = [(p, st) for p, st in files if not p.startswith(root)]
    used, nf, nl, dig = copy_tree_budget(files, os.path.join(root, "src"), int(size * 0.14), "/usr")
    manifest.append("src: %d files, %d symlinks, %d bytes (list digest %s)" % (nf, nl, used, dig[:16]))
    log(manifest[-1])

    # (b) medium binaries
    bins = [(p, st) for p, st in list_system_files([SYSTEM_BIN_DIR])
            if os.path.dirname(p) == SYSTEM_BIN_DIR and ".so" in os.path.basename(p)]
    used, nf, nl, dig = copy_tree_budget(bins, os.path.join(root, "bin"), int(size * 0.14),
                                         SYSTEM_BIN_DIR)
    manifest.append("bin: %d files, %d symlinks, %d bytes (list digest %s)" % (nf, nl, used, dig[:16]))
    log(manifest[-1])

    # (c) large files
    big = os.path.join(root, "big")
    os.makedirs(big)
    bigsize = size // 6
    for name in ("big1.bin", "big2.bin"):
        log("big: writing", name, bigsize)
        p = os.path.join(big, name)
        write_mixed_file(p, bigsize, rng, gen)
        set_mtime(p, fixed_mtime(rng))
    manifest.append("big: 2 files x %d bytes (mixed compressibility)" % bigsize)

    # (d) duplicates and near duplicates
    dup = os.path.join(root, "dup")
    os.makedirs(dup)
    log("dup: exact copy of big2, near-duplicate of big1")
    shutil.copyfile(os.path.join(big, "big2.bin"), os.path.join(dup, "big2-copy.bin"))
    set_mtime(os.path.join(dup, "big2-copy.bin"), fixed_mtime(rng))
    inserts = []
    for frac, ln in ((0.10, 1), (0.30, 7), (0.50, 100), (0.70, 4096), (0.90, 65536)):
        inserts.append((int(bigsize * frac), gen.random(ln)))
    copy_with_insertions(os.path.join(big, "big1.bin"), os.path.join(dup, "big1-near.bin"), inserts)
    set_mtime(os.path.join(dup, "big1-near.bin"), fixed_mtime(rng))
    manifest.append("dup: big2-copy.bin (exact), big1-near.bin (big1 + 1,7,100,4096,65536 bytes inserted at 10/30/50/70/90%)")
    # exact copies of a slice of src/ and bin/
    src_files = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(root, "src"))
                       for f in fs if os.path.isfile(os.path.join(dp, f)) and not os.path.islink(os.path.join(dp, f)))
    bin_files = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(root, "bin"))
                       for f in fs if os.path.isfile(os.path.join(dp, f)) and not os.path.islink(os.path.join(dp, f)))
    srng = random.Random(a.seed + 2)
    pick = srng.sample(src_files, min(300, len(src_files))) + srng.sample(bin_files, min(10, len(bin_files)))
    dupbytes = 0
    for i, p in enumerate(sorted(pick)):
        d = os.path.join(dup, "copies", "%04d-%s" % (i, os.path.basename(p)))
        os.makedirs(os.path.dirname(d), exist_ok=True)
        shutil.copy2(p, d)
        dupbytes += os.path.getsize(d)
    manifest.append("dup/copies: %d exact copies of src/bin files, %d bytes" % (len(pick), dupbytes))

    # (e) special cases
    log("special: sparse, links, names, modes ...")
    manifest += ["special: " + n for n in make_special(root, rng, gen, src_files[:50], bin_files[:50])]

    fix_dir_mtimes(root, rng)
    # readonly-dir got its mode before; dir mtimes are set after all writes
    summarize(root, manifest)
    with open(root.rstrip("/") + ".manifest", "w") as f:
        f.write("\n".join(manifest) + "\n")
    print("\n".join(manifest))


def summarize(root, manifest):
    counts = {"files": 0, "dirs": 0, "symlinks": 0, "other": 0}
    apparent = allocated = 0
    for dirpath, dirnames, filenames in os.walk(root):
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        counts["dirs"] += len(dirnames) - len(links)
        for n in filenames + links:
            st = os.lstat(os.path.join(dirpath, n))
            if stat.S_ISREG(st.st_mode):
                counts["files"] += 1
                apparent += st.st_size
                allocated += st.st_blocks * 512
            elif stat.S_ISLNK(st.st_mode):
                counts["symlinks"] += 1
            else:
                counts["other"] += 1
    manifest.append("TOTAL: %d regular files (%d bytes apparent, %d allocated), %d dirs, %d symlinks, %d other"
                    % (counts["files"], apparent, allocated, counts["dirs"], counts["symlinks"], counts["other"]))


# --------------------------------------------------------------------------
# mutate
# --------------------------------------------------------------------------
def cmd_mutate(a):
    root = os.path.abspath(a.dir)
    rng = random.Random(a.seed)
    gen = Gen(random.Random(a.seed + 1))
    small, large = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in sorted(filenames):
            p = os.path.join(dirpath, fn)
            st = os.lstat(p)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
                continue
            if "/special/" in p:
                continue  # keep the metadata torture cases stable
            if st.st_size <= 256 * KiB:
                small.append(p)
            elif st.st_size >= 8 * MiB:
                large.append(p)
    n = max(1, int(len(small) * a.percent / 100.0))
    chosen = rng.sample(small, min(n, len(small)))
    touched = modified = 0
    now_ns = (BASE_MTIME + 4 * 365 * 86400) * 1_000_000_000 + 424242
    for i, p in enumerate(chosen):
        if i % 3 == 0:
            os.utime(p, ns=(now_ns, now_ns))  # metadata-only change
            touched += 1
        else:
            st = os.stat(p)
            with open(p, "r+b") as f:
                if i % 3 == 1 and st.st_size > 16:
                    f.seek(rng.randrange(0, st.st_size - 8))
                    f.write(gen.random(8))  # in-place overwrite
                else:
                    f.seek(0, 2)
                    f.write(b"\n# mutated %d\n" % i)  # append
            modified += 1
    report = ["mutate %s: %d small files considered, %d touched (mtime only), %d modified"
              % (root, len(small), touched, modified)]
    large.sort(key=lambda p: os.path.relpath(p, root))  # big/big1.bin, big/big2.bin first
    if large:
        p = large[0]
        with open(p, "ab") as f:
            f.write(gen.random(16 * MiB))
        report.append("appended 16 MiB to %s" % os.path.relpath(p, root))
    if len(large) > 1:
        p = large[1]
        size = os.path.getsize(p)
        tmp = p + ".mutating"
        copy_with_insertions(p, tmp, [(size // 2, gen.random(10))])
        st = os.stat(p)
        os.replace(tmp, p)
        os.chmod(p, stat.S_IMODE(st.st_mode))
        report.append("inserted 10 bytes at the middle of %s" % os.path.relpath(p, root))
    chosen_set = set(chosen)
    rest = [p for p in small if p not in chosen_set]
    deleted = rng.sample(rest, min(10, len(rest)))
    for p in deleted:
        os.unlink(p)
    report.append("deleted %d small files" % len(deleted))
    newdir = os.path.join(root, "new-%d" % a.seed)
    os.makedirs(newdir, exist_ok=True)
    for i in range(10):
        with open(os.path.join(newdir, "added-%02d.txt" % i), "wb") as f:
            f.write(gen.text(rng.randrange(100, 20000)))
    with open(os.path.join(newdir, "added-medium.bin"), "wb") as f:
        f.write(gen.random(32 * MiB))
    report.append("added 10 small files and one 32 MiB file under %s" % os.path.relpath(newdir, root))
    print("\n".join(report))


# --------------------------------------------------------------------------
# smallfiles
# --------------------------------------------------------------------------
def cmd_smallfiles(a):
    root = os.path.abspath(a.dir)
    if os.path.exists(root) and os.listdir(root):
        sys.exit("smallfiles: %s exists and is not empty" % root)
    rng = random.Random(a.seed)
    gen = Gen(random.Random(a.seed + 1))
    per_leaf = 100
    leaves = (a.count + per_leaf - 1) // per_leaf
    fanout = 10
    total = 0
    made = 0
    for leaf in range(leaves):
        d = os.path.join(root, "d%03d" % (leaf // fanout), "s%02d" % (leaf % fanout))
        os.makedirs(d, exist_ok=True)
        for i in range(min(per_leaf, a.count - made)):
            size = rng.randrange(1 * KiB, 8 * KiB + 1)
            is_text = rng.random() < 0.7
            data = gen.text(size) if is_text else gen.random(size)
            p = os.path.join(d, "f%03d.%s" % (i, "txt" if is_text else "bin"))
            with open(p, "wb") as f:
                f.write(data)
            set_mtime(p, fixed_mtime(rng))
            total += size
            made += 1
    fix_dir_mtimes(root, rng)
    msg = "smallfiles: %d files, %d bytes, %d leaf dirs" % (made, total, leaves)
    with open(root.rstrip("/") + ".manifest", "w") as f:
        f.write(msg + "\n")
    print(msg)


def parse_size(s):
    s = s.strip().upper()
    mult = 1
    for suf, m in (("GIB", GiB), ("MIB", MiB), ("KIB", KiB), ("G", GiB), ("M", MiB), ("K", KiB)):
        if s.endswith(suf):
            mult, s = m, s[: -len(suf)]
            break
    return int(float(s) * mult)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    m.add_argument("--size", type=parse_size, default=3 * GiB)
    m.add_argument("--seed", type=int, default=42)
    u = sub.add_parser("mutate")
    u.add_argument("dir")
    u.add_argument("percent", type=float)
    u.add_argument("--seed", type=int, default=7)
    s = sub.add_parser("smallfiles")
    s.add_argument("dir")
    s.add_argument("--count", type=int, default=200_000)
    s.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    {"make": cmd_make, "mutate": cmd_mutate, "smallfiles": cmd_smallfiles}[a.cmd](a)


if __name__ == "__main__":
    main()
