/* Byte-range locks and the partition append lock (P-3). */
#include "internal.h"

/* ------------------------------------------------------------------ */
/* byte-range locks                                                    */
/* ------------------------------------------------------------------ */

int pl_lock(int fd, int64_t start, int64_t len, int mode, int wait)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    if (mode == 0) fl.l_type = F_UNLCK;
    else if (mode == 1) fl.l_type = F_RDLCK;
    else if (mode == 2) fl.l_type = F_WRLCK;
    else return -EINVAL;
    if (start < 0 || len < 0)
        return -EINVAL;
    fl.l_whence = SEEK_SET;
    fl.l_start = (off_t)start;
    fl.l_len = (off_t)len;
    fl.l_pid = 0; /* required for OFD locks */
#if defined(F_OFD_SETLK) && defined(F_OFD_SETLKW)
    int cmd = wait ? F_OFD_SETLKW : F_OFD_SETLK;
#else
    int cmd = wait ? F_SETLKW : F_SETLK;
#endif
    if (fcntl(fd, cmd, &fl) == -1)
        return -errno;
    return 0;
}

/* ---- append lock ---- */


int pl_liveness_lock(int live_fd, uint32_t token)
{
    if (token == 0 || token > 0x7fffffffu)
        return PL_E_INVAL;
    return pl_lock(live_fd, PL_LIVENESS_BASE + (int64_t)token, 1, 1, 0);
}

#ifdef PL_FUTEX_LOCK
/* Is the Log owning ``token`` alive?  It is while some open file description
 * holds a read lock on its liveness byte; ours never conflicts with itself. */
int pl_token_alive(int live_fd, uint32_t token)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = (off_t)(PL_LIVENESS_BASE + (int64_t)token);
    fl.l_len = 1;
    if (fcntl(live_fd, F_OFD_GETLK, &fl) == -1)
        return 1; /* cannot tell: assume alive, keep waiting */
    return fl.l_type != F_UNLCK;
}
#endif

#define PL_LOCK_POLL_US 20000 /* how often a waiter checks the holder is alive */

#ifdef PL_FUTEX_LOCK
int pl_word_lock(uint32_t *w, uint32_t token, int live_fd, int wait)
{
    uint32_t *waiters = w + 1;
    for (long round = 0;; round++) {
        uint32_t cur = 0;
        if (__atomic_compare_exchange_n(w, &cur, token, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return 0;
        if (cur == token)
            return PL_E_INVAL; /* this Log holds it already: a caller bug */
        if (!wait || round > 0) {
            if (!pl_token_alive(live_fd, cur)) {
                if (__atomic_compare_exchange_n(w, &cur, token, 0, __ATOMIC_ACQUIRE,
                                                __ATOMIC_RELAXED))
                    return 1;
                continue;
            }
            if (!wait)
                return PL_E_BUSY;
        }
        struct timespec ts = {0, PL_LOCK_POLL_US * 1000L};
        __atomic_fetch_add(waiters, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(w, __ATOMIC_SEQ_CST) == cur)
            syscall(SYS_futex, w, FUTEX_WAIT, cur, &ts, NULL, 0);
        __atomic_fetch_sub(waiters, 1, __ATOMIC_SEQ_CST);
    }
}

int pl_word_unlock(uint32_t *w, uint32_t token)
{
    uint32_t expect = token;
    if (!__atomic_compare_exchange_n(w, &expect, 0, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
        return PL_E_INVAL; /* not ours (taken over after we were thought dead) */
    if (__atomic_load_n(w + 1, __ATOMIC_SEQ_CST) != 0)
        syscall(SYS_futex, w, FUTEX_WAKE, 1, NULL, NULL, 0);
    return 0;
}
#endif

int pl_plock_acquire(void *state, uint32_t token, int live_fd, int state_fd, int wait)
{
    if (!state || ((uintptr_t)state & 7) || token == 0)
        return PL_E_INVAL;
#ifdef PL_FUTEX_LOCK
    (void)state_fd;
    int rc = pl_word_lock((uint32_t *)((uint8_t *)state + PL_STATE_LOCK_WORD), token, live_fd,
                          wait);
    if (rc == 1)
        /* P-3: the holder died; its half-done work past the published end
         * is cleaned up before the next append (flagged here: the flag
         * outlives us if we die too). */
        __atomic_store_n((uint32_t *)((uint8_t *)state + PL_STATE_TAKEOVER), 1,
                         __ATOMIC_SEQ_CST);
    return rc;
#else
    (void)live_fd;
    int rc = pl_lock(state_fd, 0, 1, 2, wait);
    if (rc == -EAGAIN || rc == -EACCES)
        return PL_E_BUSY;
    return rc;
#endif
}

int pl_plock_release(void *state, uint32_t token, int state_fd)
{
    if (!state || ((uintptr_t)state & 7) || token == 0)
        return PL_E_INVAL;
#ifdef PL_FUTEX_LOCK
    (void)state_fd;
    return pl_word_unlock((uint32_t *)((uint8_t *)state + PL_STATE_LOCK_WORD), token);
#else
    return pl_lock(state_fd, 0, 1, 0, 0);
#endif
}
