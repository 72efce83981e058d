/*
 * Power-cut recorder, loaded with LD_PRELOAD into the real `cairn` binary
 * by crates/cli/tests/e2e/powercut.rs.
 *
 * Only an fsync makes anything durable under a pessimistic POSIX model,
 * so this shim snapshots, at every fsync/fdatasync/syncfs, what that call
 * made durable: a regular file's bytes, or a directory's entries. The test
 * then replays the records before a cut point to rebuild what a disk
 * would hold after a power cut there.
 *
 * The log directory is $CAIRN_POWERCUT_LOG. `log` holds one record per
 * line; `seq` the last sequence number; `lock` is taken with flock around
 * both, so threads and processes share one order; `blobs/<seq>` holds a
 * file's bytes. Records (names hex-encoded: they may hold any byte):
 *
 *   FILE <seq> <ticket> <ino> <btime_s> <btime_ns> <path-hex>
 *   DIR <seq> <ticket> <path-hex> <n>
 *   E <name-hex> <ino> <btime_s> <btime_ns> <type f|d|l|o> <mode-octal>
 *   ACK <seq> <ticket> <label>            (written by the test)
 *
 * <seq> orders the records as the syncs returned (a cut after record k
 * keeps the syncs with seq <= k); <ticket> (the file `ticket`) orders the
 * snapshots as they were taken.
 *
 * With $CAIRN_POWERCUT_ROOT set, every FILE or DIR record is followed by
 * the whole tree below that root as it stood (its names, not its bytes),
 * for a second model where every name change reached the disk but no
 * unsynced byte did (a filesystem with delayed allocation):
 *
 *   TREE <n>
 *   T <relpath-hex> <ino> <btime_s> <btime_ns> <type> <mode-octal>
 *
 * A record is appended after the real call returned: a cut before that
 * point must not count the data as durable. The snapshot is taken before
 * the call, so a concurrent change that the call might also have saved is
 * left out, which only makes the model more pessimistic.
 *
 * Build: gcc -shared -fPIC -O2 -o shim.so shim.c -ldl
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

struct buf {
    char *p;
    size_t len, cap;
};

static void put(struct buf *b, const void *d, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap * 2 : 4096;
        while (c < b->len + n + 1) c *= 2;
        char *np = realloc(b->p, c);
        if (!np) abort();
        b->p = np;
        b->cap = c;
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void putf(struct buf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) abort();
    put(b, tmp, (size_t)n);
}

static void puthex(struct buf *b, const char *s, size_t n) {
    static const char h[] = "0123456789abcdef";
    if (n == 0) {
        put(b, "-", 1);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        char c[2] = {h[(unsigned char)s[i] >> 4], h[(unsigned char)s[i] & 15]};
        put(b, c, 2);
    }
}

static void die(const char *what) {
    /* A record lost would make the replay wrong, not just incomplete. */
    fprintf(stderr, "powercut shim: %s: %s\n", what, strerror(errno));
    abort();
}

/* Birth time tells a reused inode number from the file it had before. */
static int ident(int dirfd, const char *name, int flags, unsigned long long *ino,
                 long long *bs, unsigned *bns, unsigned *mode) {
    struct statx sx;
    if (statx(dirfd, name, flags | AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS | STATX_BTIME, &sx) != 0) {
        if (errno == ENOENT) return -1;
        die("statx");
    }
    *ino = sx.stx_ino;
    *bs = (sx.stx_mask & STATX_BTIME) ? sx.stx_btime.tv_sec : 0;
    *bns = (sx.stx_mask & STATX_BTIME) ? sx.stx_btime.tv_nsec : 0;
    *mode = sx.stx_mode;
    return 0;
}

static int fd_path(int fd, char *out, size_t n) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t r = readlink(link, out, n - 1);
    if (r < 0) return -1;
    out[r] = 0;
    return 0;
}

/* Appends `rec` (whose sequence number is the placeholder %SEQ%) under the lock,
 * and moves the blob at `blob_tmp`, if any, to blobs/<seq>. */
static int lock_log(const char *dir) {
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/lock", dir);
    int lk = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lk < 0) die("open lock");
    while (flock(lk, LOCK_EX) != 0)
        if (errno != EINTR) die("flock");
    return lk;
}

/* The next value of the counter in file `name`; the lock must be held. */
static unsigned long long counter(const char *dir, const char *name) {
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    int sf = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (sf < 0) die("open counter");
    char num[32] = {0};
    ssize_t r = pread(sf, num, sizeof num - 1, 0);
    if (r < 0) die("read counter");
    unsigned long long v = strtoull(num, NULL, 10) + 1;
    int nl = snprintf(num, sizeof num, "%020llu", v);
    if (pwrite(sf, num, (size_t)nl, 0) != nl) die("write counter");
    close(sf);
    return v;
}

static void append(const char *dir, struct buf *rec, const char *blob_tmp) {
    char p[PATH_MAX];
    int lk = lock_log(dir);
    unsigned long long seq = counter(dir, "seq");
    if (blob_tmp) {
        char dst[PATH_MAX];
        snprintf(dst, sizeof dst, "%s/blobs/%llu", dir, seq);
        if (rename(blob_tmp, dst) != 0) die("rename blob");
    }
    struct buf out = {0};
    char *at = strstr(rec->p, "%SEQ%");
    put(&out, rec->p, (size_t)(at - rec->p));
    putf(&out, "%llu", seq);
    put(&out, at + 5, strlen(at + 5));
    snprintf(p, sizeof p, "%s/log", dir);
    int lf = open(p, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (lf < 0) die("open log");
    if (write(lf, out.p, out.len) != (ssize_t)out.len) die("write log");
    close(lf);
    free(out.p);
    close(lk);
}

static char type_of(unsigned mode) {
    if (S_ISREG(mode)) return 'f';
    if (S_ISDIR(mode)) return 'd';
    if (S_ISLNK(mode)) return 'l';
    return 'o';
}

static void walk(int dfd, struct buf *rel, struct buf *out, int *n) {
    DIR *d = fdopendir(dfd);
    if (!d) die("fdopendir tree");
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        unsigned long long ino;
        long long bs;
        unsigned bns, mode;
        if (ident(dirfd(d), e->d_name, 0, &ino, &bs, &bns, &mode) != 0) continue;
        size_t keep = rel->len;
        if (rel->len) put(rel, "/", 1);
        put(rel, e->d_name, strlen(e->d_name));
        put(out, "T ", 2);
        puthex(out, rel->p, rel->len);
        putf(out, " %llu %lld %u %c %o\n", ino, bs, bns, type_of(mode), mode & 07777);
        (*n)++;
        if (S_ISDIR(mode)) {
            int sub = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (sub >= 0) walk(sub, rel, out, n);
            else if (errno != ENOENT) die("open tree directory");
        }
        rel->len = keep;
        if (rel->p) rel->p[keep] = 0;
    }
    closedir(d);
}

/* The names below $CAIRN_POWERCUT_ROOT, appended to `rec`. */
static void tree(struct buf *rec) {
    const char *root = getenv("CAIRN_POWERCUT_ROOT");
    if (!root || !*root) return;
    int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) die("open tree root");
    struct buf rel = {0}, out = {0};
    int n = 0;
    walk(fd, &rel, &out, &n);
    putf(rec, "TREE %d\n", n);
    if (out.len) put(rec, out.p, out.len);
    free(rel.p);
    free(out.p);
}

/* Builds the record for `fd` before the sync; returns 0 when there is
 * nothing to record. */
static int snapshot(const char *dir, int fd, unsigned long long ticket, struct buf *rec,
                    char *blob_tmp) {
    struct stat st;
    if (fstat(fd, &st) != 0) return 0;
    char path[PATH_MAX];
    if (fd_path(fd, path, sizeof path) != 0 || path[0] != '/') return 0;
    if (S_ISREG(st.st_mode)) {
        unsigned long long ino;
        long long bs;
        unsigned bns, mode;
        if (ident(fd, "", AT_EMPTY_PATH, &ino, &bs, &bns, &mode) != 0) die("statx file");
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        int in = open(link, O_RDONLY | O_CLOEXEC);
        if (in < 0) die("reopen for reading");
        static unsigned long long counter;
        snprintf(blob_tmp, PATH_MAX, "%s/blobs/tmp.%d.%llu", dir, (int)getpid(),
                 __atomic_add_fetch(&counter, 1, __ATOMIC_SEQ_CST));
        int out = open(blob_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (out < 0) die("create blob");
        char b[65536];
        off_t off = 0;
        for (;;) {
            ssize_t n = pread(in, b, sizeof b, off);
            if (n < 0) {
                if (errno == EINTR) continue;
                die("read file");
            }
            if (n == 0) break;
            if (write(out, b, (size_t)n) != n) die("write blob");
            off += n;
        }
        close(in);
        close(out);
        putf(rec, "FILE %%SEQ%% %llu %llu %lld %u ", ticket, ino, bs, bns);
        puthex(rec, path, strlen(path));
        put(rec, "\n", 1);
        return 1;
    }
    if (S_ISDIR(st.st_mode)) {
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        int rfd = open(link, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (rfd < 0) die("reopen directory");
        DIR *d = fdopendir(rfd);
        if (!d) die("fdopendir");
        int dfd = dirfd(d);
        struct buf ents = {0};
        int n = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            unsigned long long ino;
            long long bs;
            unsigned bns, mode;
            /* Gone since readdir: it was never there for this sync. */
            if (ident(dfd, e->d_name, 0, &ino, &bs, &bns, &mode) != 0) continue;
            put(&ents, "E ", 2);
            puthex(&ents, e->d_name, strlen(e->d_name));
            putf(&ents, " %llu %lld %u %c %o\n", ino, bs, bns, type_of(mode), mode & 07777);
            n++;
        }
        closedir(d);
        putf(rec, "DIR %%SEQ%% %llu ", ticket);
        puthex(rec, path, strlen(path));
        putf(rec, " %d\n", n);
        if (ents.len) put(rec, ents.p, ents.len);
        free(ents.p);
        blob_tmp[0] = 0;
        return 1;
    }
    return 0;
}

static int recorded(int fd, int (*real)(int)) {
    const char *dir = getenv("CAIRN_POWERCUT_LOG");
    if (!dir || !*dir) return real(fd);
    int saved = errno;
    struct buf rec = {0};
    char blob_tmp[PATH_MAX];
    blob_tmp[0] = 0;
    /* Snapshots are taken under the lock, so their tickets order them as
     * they happened; syncs may finish, and take their seq, in another
     * order, and the replay uses the newest snapshot among them. */
    int lk = lock_log(dir);
    int have = snapshot(dir, fd, counter(dir, "ticket"), &rec, blob_tmp);
    if (have) tree(&rec);
    close(lk);
    errno = saved;
    int r = real(fd);
    if (r == 0 && have) {
        saved = errno;
        append(dir, &rec, blob_tmp[0] ? blob_tmp : NULL);
        errno = saved;
    } else if (blob_tmp[0]) {
        unlink(blob_tmp);
    }
    free(rec.p);
    return r;
}

static int (*real_fsync)(int);
static int (*real_fdatasync)(int);

int fsync(int fd) {
    if (!real_fsync) real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return recorded(fd, real_fsync);
}

int fdatasync(int fd) {
    if (!real_fdatasync) real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return recorded(fd, real_fdatasync);
}

/* Nothing in Cairn calls these; should something start to, the test must
 * know rather than replay a state missing what they saved. */
static void unmodelled(const char *what) {
    fprintf(stderr, "powercut shim: %s is not modelled: teach tests/powercut/shim.c\n", what);
    abort();
}

int syncfs(int fd) {
    (void)fd;
    unmodelled("syncfs");
    return -1;
}

void sync(void) { unmodelled("sync"); }

int sync_file_range(int fd, off64_t off, off64_t n, unsigned int flags) {
    (void)fd, (void)off, (void)n, (void)flags;
    unmodelled("sync_file_range");
    return -1;
}
