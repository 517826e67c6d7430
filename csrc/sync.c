/* Group commit (G1, L-6). */
#include "internal.h"

/* ------------------------------------------------------------------ */
/* group commit                                                        */
/* ------------------------------------------------------------------ */

/* A caller waiting for its target: woken only when the target is durable
 * or when it must lead the next sync (no thundering herd: each woken thread
 * wants the GIL next). */
typedef struct sync_waiter {
    struct sync_waiter *next;
    int64_t target;
    int woken;
    pthread_cond_t cv;
} sync_waiter;

struct pl_syncer {
    pthread_mutex_t mu;
    int fd;               /* our dup of the active segment, -1: none     */
    char *path;           /* its path (L-6 identity check), NULL: none    */
    int syncing;          /* a leader is in fdatasync                     */
    int error;            /* sticky -errno of a failed fdatasync          */
    int64_t synced_next;  /* offsets below this are durable               */
    int64_t base;         /* base offset of fd's segment, -1: none        */
    int64_t checked_ns;   /* CLOCK_MONOTONIC of the last L-6 check         */
    sync_waiter *head;    /* waiters, oldest first                        */
    sync_waiter *tail;
};

pl_syncer *pl_syncer_new(void)
{
    pl_syncer *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    pthread_mutex_init(&s->mu, NULL);
    s->fd = -1;
    s->base = -1;
    return s;
}

void pl_syncer_free(pl_syncer *s)
{
    if (!s)
        return;
    if (s->fd >= 0)
        close(s->fd);
    free(s->path);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* Under s->mu: wake every waiter whose target is durable (or all, after an
 * error or a change of segment), and, if others still wait and nobody
 * leads, the oldest of them to lead. */
static void wake_waiters(pl_syncer *s, int all)
{
    sync_waiter **pp = &s->head, *last = NULL;
    while (*pp) {
        sync_waiter *w = *pp;
        if (all || s->error || w->target <= s->synced_next) {
            *pp = w->next;
            w->woken = 1;
            pthread_cond_signal(&w->cv);
        } else {
            last = w;
            pp = &w->next;
        }
    }
    s->tail = last;
    if (!s->syncing && s->head) {
        sync_waiter *w = s->head;
        s->head = w->next;
        if (!s->head)
            s->tail = NULL;
        w->woken = 1;
        pthread_cond_signal(&w->cv);
    }
}

int pl_syncer_set_fd(pl_syncer *s, int fd, int64_t durable_next, const char *path)
{
    if (!s)
        return PL_E_INVAL;
    char *copy = NULL;
    if (fd >= 0 && path && !(copy = strdup(path)))
        return -ENOMEM;
    int dup_fd = -1;
    if (fd >= 0 && (dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0) {
        int e = errno;
        free(copy);
        return -e;
    }
    pthread_mutex_lock(&s->mu);
    /* a leader syncing the old fd synced its own dup: closing ours is safe */
    if (s->fd >= 0)
        close(s->fd);
    s->fd = dup_fd;
    s->base = dup_fd >= 0 ? durable_next : -1;
    /* fd and path change together: a leader never checks one against the
     * other's identity (it copies both under the mutex) */
    free(s->path);
    s->path = copy;
    if (durable_next > s->synced_next)
        s->synced_next = durable_next;
    wake_waiters(s, dup_fd < 0);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* L-6: is the file behind `fd` gone from the namespace (unlinked: rm -rf
 * of its directory), or does `path` (when not empty) now name another file
 * (the directory moved or replaced)?  Checked after a group's fdatasync,
 * at most every PL_IDENTITY_CHECK_NS, so appends pay nothing for it.  An
 * error other than "not there" proves nothing. */
#define PL_IDENTITY_CHECK_NS 5000000      /* 5 ms */

static int file_vanished(int fd, const char *path)
{
    struct stat held, now;
    if (fstat(fd, &held) != 0)
        return 0;
    if (held.st_nlink == 0)
        return 1;
    if (!path[0])
        return 0;
    if (stat(path, &now) != 0)
        return errno == ENOENT || errno == ENOTDIR;
    return now.st_dev != held.st_dev || now.st_ino != held.st_ino;
}

/* P-7: the check word of a durable mark: splitmix64's finalizer chained
 * over the three fields, so that a mark torn by two writers or a partial
 * write-back of the page fails it. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t durable_check(int64_t base, int64_t position, int64_t next)
{
    uint64_t h = mix64(PL_STATE_MAGIC ^ (uint64_t)base);
    h = mix64(h ^ (uint64_t)position);
    return mix64(h ^ (uint64_t)next);
}

/* P-7: record that segment `base` is durable up to `position`, where the
 * batch of offset `next` starts. Plain stores: a writer of another process
 * may store its own mark at the same time; the check word rejects a mix. */
static void write_durable_mark(void *state, int64_t base, int64_t position, int64_t next)
{
    int64_t *m = (int64_t *)((uint8_t *)state + PL_STATE_DURABLE);
    uint64_t check = durable_check(base, position, next);
    __atomic_store_n(&m[0], base, __ATOMIC_RELAXED);
    __atomic_store_n(&m[1], position, __ATOMIC_RELAXED);
    __atomic_store_n(&m[2], next, __ATOMIC_RELAXED);
    __atomic_store_n((uint64_t *)&m[3], check, __ATOMIC_RELEASE);
}

int pl_sync_through(pl_syncer *s, const pl_appender *a, int64_t target_next)
{
    if (!s || !a)
        return PL_E_INVAL;
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (s->error) {
            rc = s->error;
            break;
        }
        if (s->synced_next >= target_next)
            break;
        if (s->fd < 0) {
            rc = PL_E_STALE; /* no active segment: the partition was closed */
            break;
        }
        if (s->syncing) {
            sync_waiter w;
            w.next = NULL;
            w.target = target_next;
            w.woken = 0;
            pthread_cond_init(&w.cv, NULL);
            if (s->tail)
                s->tail->next = &w;
            else
                s->head = &w;
            s->tail = &w;
            while (!w.woken)
                pthread_cond_wait(&w.cv, &s->mu);
            pthread_cond_destroy(&w.cv);
            continue;
        }
        /* lead one sync: it covers what was published before it starts */
        s->syncing = 1;
        int64_t upto = __atomic_load_n(&a->written_next, __ATOMIC_ACQUIRE);
        int fd = fcntl(s->fd, F_DUPFD_CLOEXEC, 0);
        int err = fd < 0 ? errno : 0;
        char path[4096];
        path[0] = 0;
        if (s->path && strlen(s->path) < sizeof path)
            strcpy(path, s->path);
        /* L-6 at most every PL_IDENTITY_CHECK_NS: a check after every
         * fdatasync measured 25% of durable sends, one per 5 ms nothing */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t now_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
        int check = now_ns - s->checked_ns >= PL_IDENTITY_CHECK_NS;
        if (check)
            s->checked_ns = now_ns;
        int64_t base = s->base;
        pthread_mutex_unlock(&s->mu);
        /* P-7: the published end before the sync is durable after it, when
         * it is in this syncer's segment (another process may have rolled) */
        int64_t st[PL_STATE_VALS];
        int mark = !err && a->state && base >= 0 &&
                   pl_state_read(a->state, st, NULL) == 0 && st[1] == base;
        int vanished = 0;
        if (!err) {
            int64_t t0 = pli_mono_ns();
            int failed = fdatasync(fd) != 0;
            if (failed)
                err = errno ? errno : EIO;
            pli_count_fsync(a->state, pli_mono_ns() - t0); /* P-11 */
            if (!failed && check)
                vanished = file_vanished(fd, path);
            close(fd);
        }
        pthread_mutex_lock(&s->mu);
        s->syncing = 0;
        if (fd < 0) {
            /* no descriptor for the sync (EMFILE...): this caller fails,
             * the data is unharmed and the next leader tries again */
            wake_waiters(s, 0);
            rc = PL_E_NOFD;
            break;
        }
        if (err)
            s->error = -err;
        else if (vanished)
            s->error = PL_E_VANISHED;
        else {
            if (upto > s->synced_next)
                s->synced_next = upto;
            if (mark)
                write_durable_mark(a->state, base, st[2], st[0]);
        }
        wake_waiters(s, 0);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}
