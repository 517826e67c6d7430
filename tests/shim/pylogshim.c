/* LD_PRELOAD shim of pylog's reliability tests (tests/test_faults.py,
 * tests/test_powerloss.py).  Built by the tests at run time with `cc`.
 *
 * Fault injection (all env vars optional):
 *   PLSHIM_FAULT_OPS    comma list: fsync,fdatasync,msync,sync_file_range,
 *                       rename (matched on the source path),
 *                       fallocate,write,ftruncate
 *   PLSHIM_FAULT_PATH   substring the file's path must contain
 *   PLSHIM_FAULT_ERRNO  errno to inject (number; default EIO)
 *   PLSHIM_FAULT_AFTER  matching calls that pass before the first fault (0)
 *   PLSHIM_FAULT_COUNT  faults to inject, -1 = unlimited (default 1)
 *   PLSHIM_FAULT_GATE   faults only while this file exists
 *   PLSHIM_FAULT_LOG    append "op path\n" per injected fault
 *
 * Race widening (tests/test_roll_race.py):
 *   PLSHIM_DELAY_FSTAT_US  fstat of a file whose path contains
 *                          PLSHIM_DELAY_PATH returns what it saw this many
 *                          microseconds late, so a size read and its use
 *                          straddle a concurrent truncate far more often
 *
 * Durable image ("power loss", SQLite crash-test style):
 *   PLSHIM_SHADOW_ROOT  only files under this directory are tracked
 *   PLSHIM_SHADOW_DIR   where images go: <ino>.img is a file's content as of
 *                       its last fsync/fdatasync/msync(MS_SYNC)/O_DSYNC write;
 *                       dir-<ino>.lst lists a directory's entries (name, ino)
 *                       as of its last fsync.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static __thread int busy;           /* our own I/O is never intercepted */
static long fault_seen, fault_done;

#define REAL(ret, name, ...) \
    static ret (*real_##name)(__VA_ARGS__); \
    if (!real_##name) real_##name = (ret (*)(__VA_ARGS__))dlsym(RTLD_NEXT, #name)

static int fd_path(int fd, char *out, size_t cap) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, out, cap - 1);
    if (n < 0) return -1;
    out[n] = 0;
    return 0;
}

static int addr_path(const void *addr, char *out, size_t cap) {
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f) return -1;
    char line[4608];
    int found = -1;
    uintptr_t a = (uintptr_t)addr;
    while (fgets(line, sizeof line, f)) {
        uintptr_t lo, hi;
        if (sscanf(line, "%lx-%lx", &lo, &hi) != 2) continue;
        if (a < lo || a >= hi) continue;
        char *p = strchr(line, '/');
        if (p) {
            size_t n = strcspn(p, "\n");
            if (n >= cap) n = cap - 1;
            memcpy(out, p, n);
            out[n] = 0;
            found = 0;
        }
        break;
    }
    fclose(f);
    return found;
}

/* 1 when the call should fail with *err set */
static int should_fault(const char *op, const char *path) {
    const char *ops = getenv("PLSHIM_FAULT_OPS");
    if (!ops || !*ops) return 0;
    size_t ol = strlen(op);
    const char *p = ops;
    int match = 0;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == ol && !strncmp(p, op, l)) { match = 1; break; }
        if (!e) break;
        p = e + 1;
    }
    if (!match) return 0;
    const char *pat = getenv("PLSHIM_FAULT_PATH");
    if (pat && *pat && (!path || !strstr(path, pat))) return 0;
    const char *gate = getenv("PLSHIM_FAULT_GATE");
    if (gate && *gate && access(gate, F_OK) != 0) return 0;
    long after = getenv("PLSHIM_FAULT_AFTER") ? atol(getenv("PLSHIM_FAULT_AFTER")) : 0;
    long count = getenv("PLSHIM_FAULT_COUNT") ? atol(getenv("PLSHIM_FAULT_COUNT")) : 1;
    int hit = 0;
    pthread_mutex_lock(&mu);
    fault_seen++;
    if (fault_seen > after && (count < 0 || fault_done < count)) {
        fault_done++;
        hit = 1;
    }
    pthread_mutex_unlock(&mu);
    if (hit) {
        const char *lg = getenv("PLSHIM_FAULT_LOG");
        if (lg && *lg) {
            busy++;
            FILE *f = fopen(lg, "ae");
            if (f) { fprintf(f, "%s %s\n", op, path ? path : "?"); fclose(f); }
            busy--;
        }
    }
    return hit;
}

static int fault_errno(void) {
    const char *e = getenv("PLSHIM_FAULT_ERRNO");
    return e && *e ? atoi(e) : EIO;
}

static const char *under_root(const char *path) {
    const char *root = getenv("PLSHIM_SHADOW_ROOT");
    if (!root || !*root || !getenv("PLSHIM_SHADOW_DIR")) return NULL;
    size_t l = strlen(root);
    if (strncmp(path, root, l) || (path[l] != '/' && path[l] != 0)) return NULL;
    return path;
}

/* copy the file's current bytes (or a directory's listing) into the shadow */
static void snapshot_path(const char *path) {
    if (!under_root(path)) return;
    const char *sd = getenv("PLSHIM_SHADOW_DIR");
    busy++;
    pthread_mutex_lock(&mu);
    struct stat st;
    if (stat(path, &st) == 0) {
        char tmp[4096], dst[4096];
        snprintf(tmp, sizeof tmp, "%s/tmp.%d", sd, (int)getpid());
        if (S_ISDIR(st.st_mode)) {
            snprintf(dst, sizeof dst, "%s/dir-%lu.lst", sd, (unsigned long)st.st_ino);
            DIR *d = opendir(path);
            FILE *f = fopen(tmp, "we");
            if (d && f) {
                struct dirent *de;
                while ((de = readdir(d))) {
                    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
                    fprintf(f, "%lu %s\n", (unsigned long)de->d_ino, de->d_name);
                }
            }
            if (d) closedir(d);
            if (f) { fclose(f); rename(tmp, dst); }
        } else if (S_ISREG(st.st_mode)) {
            snprintf(dst, sizeof dst, "%s/%lu.img", sd, (unsigned long)st.st_ino);
            int in = open(path, O_RDONLY | O_CLOEXEC);
            int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
            if (in >= 0 && out >= 0) {
                char buf[65536];
                ssize_t n;
                int ok = 1;
                while ((n = read(in, buf, sizeof buf)) > 0)
                    if (write(out, buf, (size_t)n) != n) { ok = 0; break; }
                close(out);
                out = -1;
                if (ok && n == 0) rename(tmp, dst);
            }
            if (in >= 0) close(in);
            if (out >= 0) close(out);
        }
    }
    pthread_mutex_unlock(&mu);
    busy--;
}

static void snapshot_fd(int fd) {
    char path[4096];
    if (getenv("PLSHIM_SHADOW_DIR") && fd_path(fd, path, sizeof path) == 0)
        snapshot_path(path);
}

static int fd_fault(const char *op, int fd) {
    if (busy || !getenv("PLSHIM_FAULT_OPS")) return 0;
    char path[4096];
    if (fd_path(fd, path, sizeof path) != 0) path[0] = 0;
    return should_fault(op, path);
}

static void after_write(int fd, ssize_t rc) {
    if (busy || rc <= 0 || !getenv("PLSHIM_SHADOW_DIR")) return;
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && (fl & (O_DSYNC | O_SYNC))) snapshot_fd(fd);
}

int fsync(int fd) {
    REAL(int, fsync, int);
    if (fd_fault("fsync", fd)) { errno = fault_errno(); return -1; }
    int rc = real_fsync(fd);
    if (rc == 0 && !busy) snapshot_fd(fd);
    return rc;
}

int fdatasync(int fd) {
    REAL(int, fdatasync, int);
    if (fd_fault("fdatasync", fd)) { errno = fault_errno(); return -1; }
    int rc = real_fdatasync(fd);
    if (rc == 0 && !busy) snapshot_fd(fd);
    return rc;
}

int msync(void *addr, size_t len, int flags) {
    REAL(int, msync, void *, size_t, int);
    char path[4096];
    int have = 0;
    if (!busy && (getenv("PLSHIM_FAULT_OPS") || getenv("PLSHIM_SHADOW_DIR")))
        have = addr_path(addr, path, sizeof path) == 0;
    if (!busy && getenv("PLSHIM_FAULT_OPS") && should_fault("msync", have ? path : NULL)) {
        errno = fault_errno();
        return -1;
    }
    int rc = real_msync(addr, len, flags);
    if (rc == 0 && have && (flags & MS_SYNC)) snapshot_path(path);
    return rc;
}

int sync_file_range(int fd, off64_t off, off64_t n, unsigned int flags) {
    REAL(int, sync_file_range, int, off64_t, off64_t, unsigned int);
    if (fd_fault("sync_file_range", fd)) { errno = fault_errno(); return -1; }
    return real_sync_file_range(fd, off, n, flags);
}

int posix_fallocate(int fd, off_t off, off_t len) {
    REAL(int, posix_fallocate, int, off_t, off_t);
    if (fd_fault("fallocate", fd)) return fault_errno();
    return real_posix_fallocate(fd, off, len);
}

int posix_fallocate64(int fd, off64_t off, off64_t len) {
    REAL(int, posix_fallocate64, int, off64_t, off64_t);
    if (fd_fault("fallocate", fd)) return fault_errno();
    return real_posix_fallocate64(fd, off, len);
}

int fallocate(int fd, int mode, off_t off, off_t len) {
    REAL(int, fallocate, int, int, off_t, off_t);
    if (fd_fault("fallocate", fd)) { errno = fault_errno(); return -1; }
    return real_fallocate(fd, mode, off, len);
}

int ftruncate(int fd, off_t len) {
    REAL(int, ftruncate, int, off_t);
    if (fd_fault("ftruncate", fd)) { errno = fault_errno(); return -1; }
    return real_ftruncate(fd, len);
}

int ftruncate64(int fd, off64_t len) {
    REAL(int, ftruncate64, int, off64_t);
    if (fd_fault("ftruncate", fd)) { errno = fault_errno(); return -1; }
    return real_ftruncate64(fd, len);
}

ssize_t write(int fd, const void *buf, size_t n) {
    REAL(ssize_t, write, int, const void *, size_t);
    if (fd > 2 && fd_fault("write", fd)) { errno = fault_errno(); return -1; }
    ssize_t rc = real_write(fd, buf, n);
    if (fd > 2) after_write(fd, rc);
    return rc;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    REAL(ssize_t, pwrite, int, const void *, size_t, off_t);
    if (fd_fault("write", fd)) { errno = fault_errno(); return -1; }
    ssize_t rc = real_pwrite(fd, buf, n, off);
    after_write(fd, rc);
    return rc;
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off) {
    REAL(ssize_t, pwrite64, int, const void *, size_t, off64_t);
    if (fd_fault("write", fd)) { errno = fault_errno(); return -1; }
    ssize_t rc = real_pwrite64(fd, buf, n, off);
    after_write(fd, rc);
    return rc;
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    REAL(ssize_t, writev, int, const struct iovec *, int);
    if (fd > 2 && fd_fault("write", fd)) { errno = fault_errno(); return -1; }
    ssize_t rc = real_writev(fd, iov, cnt);
    if (fd > 2) after_write(fd, rc);
    return rc;
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    REAL(ssize_t, pwritev, int, const struct iovec *, int, off_t);
    if (fd_fault("write", fd)) { errno = fault_errno(); return -1; }
    ssize_t rc = real_pwritev(fd, iov, cnt, off);
    after_write(fd, rc);
    return rc;
}

/* fstat that answers late (PLSHIM_DELAY_FSTAT_US): the answer is stale by
 * the delay, widening check-then-use races on file sizes. */
static void fstat_delay(int fd, int rc) {
    const char *us = getenv("PLSHIM_DELAY_FSTAT_US");
    if (busy || rc != 0 || !us || !*us) return;
    char path[4096];
    const char *pat = getenv("PLSHIM_DELAY_PATH");
    busy++;
    int got = fd_path(fd, path, sizeof path);
    busy--;
    if (got != 0 || (pat && *pat && !strstr(path, pat))) return;
    usleep((useconds_t)atol(us));
}

int fstat(int fd, struct stat *st) {
    REAL(int, fstat, int, struct stat *);
    int rc = real_fstat(fd, st);
    fstat_delay(fd, rc);
    return rc;
}

int fstat64(int fd, struct stat64 *st) {
    REAL(int, fstat64, int, struct stat64 *);
    int rc = real_fstat64(fd, st);
    fstat_delay(fd, rc);
    return rc;
}

/* rename(2) refused, as a log directory without write permission refuses
 * it (EACCES) even to the process that owns the files inside */
int rename(const char *from, const char *to) {
    REAL(int, rename, const char *, const char *);
    if (!busy && getenv("PLSHIM_FAULT_OPS") && should_fault("rename", from)) {
        errno = fault_errno();
        return -1;
    }
    return real_rename(from, to);
}

int renameat(int fromfd, const char *from, int tofd, const char *to) {
    REAL(int, renameat, int, const char *, int, const char *);
    if (!busy && getenv("PLSHIM_FAULT_OPS") && should_fault("rename", from)) {
        errno = fault_errno();
        return -1;
    }
    return real_renameat(fromfd, from, tofd, to);
}
