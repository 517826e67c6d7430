/* Partition state seqlock (P-2) and doorbells (L-3), and the reader's
 * wait-then-fetch call. */
#include "internal.h"

/* ------------------------------------------------------------------ */
/* partition state seqlock                                             */
/* ------------------------------------------------------------------ */


int pl_state_publish(void *state, const int64_t vals[6])
{
    if (!state || !vals || ((uintptr_t)state & 7))
        return PL_E_INVAL;
    pl_state_t *s = (pl_state_t *)state;
    uint64_t seq = __atomic_load_n(&s->seq, __ATOMIC_RELAXED);
    if (seq & 1)
        seq++; /* a previous writer died mid-publish: we hold the lock now */
    __atomic_store_n(&s->seq, seq + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    for (int i = 0; i < 6; i++)
        __atomic_store_n(&s->vals[i], vals[i], __ATOMIC_RELAXED);
    __atomic_store_n(&s->magic, PL_STATE_MAGIC, __ATOMIC_RELAXED);
    __atomic_store_n(&s->version, PL_STATE_VERSION, __ATOMIC_RELAXED);
    __atomic_store_n(&s->seq, seq + 2, __ATOMIC_RELEASE);
    return 0;
}

int pl_state_read(const void *state, int64_t vals_out[6], uint64_t *seq_out)
{
    if (!state || !vals_out || ((uintptr_t)state & 7))
        return PL_E_INVAL;
    const pl_state_t *s = (const pl_state_t *)state;
    for (long spin = 0; spin < 1000000; spin++) {
        uint64_t s1 = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
        if (!(s1 & 1)) {
            int64_t tmp[6];
            for (int i = 0; i < 6; i++)
                tmp[i] = __atomic_load_n(&s->vals[i], __ATOMIC_RELAXED);
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            uint64_t s2 = __atomic_load_n(&s->seq, __ATOMIC_RELAXED);
            if (s1 == s2) {
                memcpy(vals_out, tmp, sizeof tmp);
                if (seq_out)
                    *seq_out = s1;
                return 0;
            }
        }
        if ((spin & 1023) == 1023)
            sched_yield();
        else
            cpu_relax();
    }
    return PL_E_BUSY;
}

int pl_state_repair(void *state)
{
    if (!state || ((uintptr_t)state & 7))
        return PL_E_INVAL;
    pl_state_t *s = (pl_state_t *)state;
    uint64_t seq = __atomic_load_n(&s->seq, __ATOMIC_RELAXED);
    if (seq & 1)
        __atomic_store_n(&s->seq, seq + 1, __ATOMIC_RELEASE);
    return 0;
}

/* ------------------------------------------------------------------ */
/* doorbell                                                            */
/* ------------------------------------------------------------------ */

typedef struct {
    uint32_t seq;
    uint32_t waiters;
} pl_doorbell_t;

int pl_doorbell_ring(void *slot)
{
    if (!slot || ((uintptr_t)slot & 3))
        return PL_E_INVAL;
    pl_doorbell_t *d = (pl_doorbell_t *)slot;
    __atomic_fetch_add(&d->seq, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&d->waiters, __ATOMIC_SEQ_CST) != 0) {
#if defined(__linux__)
        /* shared (non-private) futex: works across processes on a file mapping */
        syscall(SYS_futex, &d->seq, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
#endif
    }
    return 0;
}

uint32_t pl_doorbell_load(const void *slot)
{
    if (!slot || ((uintptr_t)slot & 3))
        return 0;
    return __atomic_load_n(&((const pl_doorbell_t *)slot)->seq, __ATOMIC_SEQ_CST);
}

int64_t pli_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t mono_us(void)
{
    return pli_mono_ns() / 1000;
}

int pl_doorbell_wait(void *slot, uint32_t expected, int64_t timeout_us)
{
    if (!slot || ((uintptr_t)slot & 3))
        return PL_E_INVAL;
    pl_doorbell_t *d = (pl_doorbell_t *)slot;
#if defined(__linux__)
    int result = 0;
    int64_t deadline = timeout_us >= 0 ? mono_us() + timeout_us : -1;
    __atomic_fetch_add(&d->waiters, 1, __ATOMIC_SEQ_CST);
    for (;;) {
        if (__atomic_load_n(&d->seq, __ATOMIC_SEQ_CST) != expected) {
            result = 0;
            break;
        }
        struct timespec ts, *tsp = NULL;
        if (deadline >= 0) {
            int64_t left = deadline - mono_us();
            if (left <= 0) {
                result = 1;
                break;
            }
            ts.tv_sec = (time_t)(left / 1000000);
            ts.tv_nsec = (long)(left % 1000000) * 1000;
            tsp = &ts;
        }
        long r = syscall(SYS_futex, &d->seq, FUTEX_WAIT, expected, tsp, NULL, 0);
        if (r == -1) {
            int e = errno;
            if (e == EAGAIN || e == ETIMEDOUT)
                continue; /* re-check value / deadline */
            if (e == EINTR) {
                result = -EINTR; /* let the caller handle signals */
                break;
            }
            result = -e;
            break;
        }
    }
    __atomic_fetch_sub(&d->waiters, 1, __ATOMIC_SEQ_CST);
    return result;
#else
    if (__atomic_load_n(&d->seq, __ATOMIC_SEQ_CST) != expected)
        return 0;
    int64_t us = timeout_us < 0 || timeout_us > 1000 ? 1000 : timeout_us;
    struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
    nanosleep(&ts, NULL);
    return __atomic_load_n(&d->seq, __ATOMIC_SEQ_CST) != expected ? 0 : 1;
#endif
}

/* w[0]: interest (someone waits for the watcher's wake-ups), w[1]: armed
 * (the watcher counts in the slot's waiters). Arming and disarming move
 * that count atomically, by whichever thread gets there first, so that
 * pl_watch_set can take the watcher out of the count while it sleeps: a
 * ring then skips the futex wake (a syscall and a cross-CPU wake-up in the
 * appender) that would only wake it for nothing. */
static void watch_arm(uint32_t *w, pl_doorbell_t *d)
{
    uint32_t zero = 0;
    if (__atomic_compare_exchange_n(&w[1], &zero, 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        __atomic_fetch_add(&d->waiters, 1, __ATOMIC_SEQ_CST);
}

static void watch_disarm(uint32_t *w, pl_doorbell_t *d)
{
    uint32_t one = 1;
    if (__atomic_compare_exchange_n(&w[1], &one, 0, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        __atomic_fetch_sub(&d->waiters, 1, __ATOMIC_SEQ_CST);
}

int pl_watch_set(uint32_t *w, void *slot, uint32_t on)
{
    if (!w || !slot || ((uintptr_t)slot & 3))
        return PL_E_INVAL;
    pl_doorbell_t *d = (pl_doorbell_t *)slot;
    __atomic_store_n(&w[0], on ? 1u : 0u, __ATOMIC_SEQ_CST);
    /* on: counted before the registering waiter re-checks its slot (its
     * load after this seq_cst RMW pairs with the ringer's seq_cst RMW and
     * load of waiters), so a ring after that re-check wakes the watcher */
    if (on)
        watch_arm(w, d);
    else
        watch_disarm(w, d);
    return 0;
}

int pl_doorbell_watch(void *slot, uint32_t expected, uint32_t *w, int64_t timeout_us)
{
    if (!slot || ((uintptr_t)slot & 3) || !w)
        return PL_E_INVAL;
    pl_doorbell_t *d = (pl_doorbell_t *)slot;
    int64_t deadline = timeout_us >= 0 ? mono_us() + timeout_us : -1;
    for (;;) {
        if (__atomic_load_n(&w[0], __ATOMIC_SEQ_CST))
            watch_arm(w, d);
        uint32_t seq = __atomic_load_n(&d->seq, __ATOMIC_SEQ_CST);
        if (seq != expected) {
            watch_disarm(w, d);
            if (__atomic_load_n(&w[0], __ATOMIC_SEQ_CST))
                return 0;
            /* rung while nobody was registered (an append on the loop
             * resolved its own waiters): no need to wake the caller */
            expected = seq;
            continue;
        }
        int64_t left = -1;
        if (deadline >= 0) {
            left = deadline - mono_us();
            if (left <= 0) {
                watch_disarm(w, d);
                return 1;
            }
        }
#if defined(__linux__)
        struct timespec ts, *tsp = NULL;
        if (left >= 0) {
            ts.tv_sec = (time_t)(left / 1000000);
            ts.tv_nsec = (long)(left % 1000000) * 1000;
            tsp = &ts;
        }
        long r = syscall(SYS_futex, &d->seq, FUTEX_WAIT, expected, tsp, NULL, 0);
        if (r == -1 && errno == EINTR) {
            watch_disarm(w, d);
            return -EINTR;      /* let the caller handle signals */
        }
        if (r == -1 && errno != EAGAIN && errno != ETIMEDOUT) {
            int e = errno;
            watch_disarm(w, d);
            return -e;
        }
#else
        int64_t us = left < 0 || left > 1000 ? 1000 : left;
        struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
        nanosleep(&ts, NULL);
#endif
    }
}

int pl_wait_fetch(const pl_wait_fetch_req *r, pl_fetch_out *out)
{
    if (!r || !r->state || !r->seg || !out)
        return PL_E_INVAL;
    if (r->waiting)
        __atomic_fetch_add(r->waiting, 1, __ATOMIC_SEQ_CST);
    int rc = pl_doorbell_wait(r->slot, r->expected, r->timeout_us);
    if (r->waiting)
        __atomic_fetch_sub(r->waiting, 1, __ATOMIC_SEQ_CST);
    if (rc != 0)
        return rc;
    /* Woken: decode what was published, here and now, while the GIL may
     * still be busy with the thread that rang (the decode needs none). */
    int64_t vals[PL_STATE_VALS];
    if (pl_state_read(r->state, vals, NULL) != 0)
        return PL_WAIT_WOKEN;            /* the caller's state() repairs */
    int64_t next_offset = vals[0], active_base = vals[1], end = vals[2];
    int64_t log_start = vals[5];
    if (active_base != r->seg_base || end <= (int64_t)r->pos || (uint64_t)end > r->seg_len ||
        next_offset <= r->next || log_start > r->next)
        return PL_WAIT_WOKEN;            /* rolled, grown past the map, nothing new */
    rc = pl_fetch(r->seg, (size_t)end, r->pos, r->next, r->first_base, r->max_records,
                  r->soft_records, r->fields, r->fields_cap, r->hdrs, r->hdr_cap, out);
    return rc != 0 ? rc : PL_WAIT_FETCHED;
}
