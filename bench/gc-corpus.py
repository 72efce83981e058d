#!/usr/bin/env python3
"""Many tiny distinct files, for the garbage-collection benchmark.

gc-corpus.py DIR PARTS
  DIR/pK/dNNNN/fNNN for K < PARTS: 1000 directories of 1000 files per part,
  so each part adds a million blobs (one chunk per file) to a backup.
  DIR/extraK/...: a tenth of that (100 directories) per part, the "new
  data" of the second backup. GC_PER_DIR changes the 1000 files per
  directory (for a quick try). Files are 64-447 random bytes, deterministic per
  path. Parts that exist are kept, so growing the corpus is cheap.
"""
import os
import random
import sys


def fill(d, dirs, per_dir, seed):
    if os.path.exists(os.path.join(d, ".done")):
        return
    rng = random.Random(seed)
    for i in range(dirs):
        sub = os.path.join(d, f"d{i:04d}")
        os.makedirs(sub, exist_ok=True)
        for j in range(per_dir):
            n = 64 + rng.randrange(384)
            fd = os.open(os.path.join(sub, f"f{j:03d}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, rng.randbytes(n))
            os.close(fd)
    open(os.path.join(d, ".done"), "w").close()


def main():
    root, parts = sys.argv[1], int(sys.argv[2])
    # Files per directory (1000: a million files a part); smaller for a
    # quick try of the benchmark itself.
    per = int(os.environ.get("GC_PER_DIR", "1000"))
    for k in range(parts):
        fill(os.path.join(root, f"p{k}"), 1000, per, 1000 + k)
        fill(os.path.join(root, f"extra{k}"), 100, per, 5000 + k)


main()
