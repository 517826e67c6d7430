/* The commit table: committed offsets in a shared file map (FORMAT.rst C-*).
 *
 * A slot is 64 bytes at PL_CUR_HEADER + idx * PL_CUR_SLOT (native byte
 * order, see pylog_native.h for the field offsets).  Writers take the
 * slot's lock word (the Log token, as the partition append lock does, so a
 * SIGKILLed holder is taken over, never waited on for ever) and publish
 * through a seqlock, so readers never write and never block a writer. */
#include "internal.h"

#define SLOT(base, idx) ((uint8_t *)(base) + PL_CUR_HEADER + (size_t)(idx) * PL_CUR_SLOT)
#define U32(s, off) ((uint32_t *)((s) + (off)))
#define U64(s, off) ((uint64_t *)((s) + (off)))
#define I64(s, off) ((int64_t *)((s) + (off)))

static int slot_ok(const void *base, uint64_t map_len, uint32_t idx)
{
    if (!base || ((uintptr_t)base & 63))
        return 0;
    uint64_t end = (uint64_t)PL_CUR_HEADER + ((uint64_t)idx + 1) * PL_CUR_SLOT;
    return end <= map_len;
}

/* Take the slot's lock.  0, or a negative status. */
static int slot_lock(uint8_t *s, uint32_t idx, uint32_t token, int live_fd, int fd)
{
#ifdef PL_FUTEX_LOCK
    (void)idx;
    (void)fd;
    int rc = pl_word_lock(U32(s, PL_CUR_OFF_LOCK), token, live_fd, 1);
    if (rc == 1) {
        /* the dead holder may have stopped mid-publish: every field is a
         * whole word, old or new; close the seqlock */
        uint64_t seq = __atomic_load_n(U64(s, PL_CUR_OFF_SEQ), __ATOMIC_RELAXED);
        if (seq & 1)
            __atomic_store_n(U64(s, PL_CUR_OFF_SEQ), seq + 1, __ATOMIC_RELEASE);
        rc = 0;
    }
    return rc;
#else
    (void)s;
    (void)token;
    (void)live_fd;
    return pl_lock(fd, (int64_t)PL_CUR_HEADER + (int64_t)idx * PL_CUR_SLOT, 1, 2, 1);
#endif
}

static void slot_unlock(uint8_t *s, uint32_t idx, uint32_t token, int fd)
{
#ifdef PL_FUTEX_LOCK
    (void)idx;
    (void)fd;
    pl_word_unlock(U32(s, PL_CUR_OFF_LOCK), token);
#else
    (void)s;
    (void)token;
    pl_lock(fd, (int64_t)PL_CUR_HEADER + (int64_t)idx * PL_CUR_SLOT, 1, 0, 0);
#endif
}

/* Store offset and time under the seqlock (the caller holds the lock). */
static uint64_t slot_store(uint8_t *s, int64_t offset, int64_t ms)
{
    uint64_t *seq = U64(s, PL_CUR_OFF_SEQ);
    uint64_t v = __atomic_load_n(seq, __ATOMIC_RELAXED);
    __atomic_store_n(seq, v + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    __atomic_store_n(I64(s, PL_CUR_OFF_OFFSET), offset, __ATOMIC_RELAXED);
    __atomic_store_n(I64(s, PL_CUR_OFF_MS), ms, __ATOMIC_RELAXED);
    __atomic_store_n(seq, v + 2, __ATOMIC_RELEASE);
    return v + 2;
}

int pl_cur_commit(void *base, uint64_t map_len, uint32_t idx, uint32_t token, int live_fd,
                  int fd, uint64_t key, uint64_t fence, int64_t offset, int64_t ms,
                  uint64_t *seq_out)
{
    if (!slot_ok(base, map_len, idx) || key == 0 || token == 0 || offset < 0)
        return PL_E_INVAL;
    uint8_t *s = SLOT(base, idx);
    int rc = slot_lock(s, idx, token, live_fd, fd);
    if (rc < 0)
        return rc;
    if (__atomic_load_n(U64(s, PL_CUR_OFF_KEY), __ATOMIC_RELAXED) != key)
        rc = PL_E_STALE;
    else if (fence != 0 && __atomic_load_n(U64(s, PL_CUR_OFF_FENCE), __ATOMIC_RELAXED) != fence)
        rc = PL_E_FENCED;
    else {
        uint64_t seq = slot_store(s, offset, ms);
        if (seq_out)
            *seq_out = seq;
    }
    slot_unlock(s, idx, token, fd);
    return rc;
}

int pl_cur_set(void *base, uint64_t map_len, uint32_t idx, uint32_t token, int live_fd, int fd,
               uint64_t key, int what, uint64_t fence, int64_t offset, int64_t ms)
{
    if (!slot_ok(base, map_len, idx) || token == 0 || (key == 0 && !(what & PL_CUR_CLEAR)))
        return PL_E_INVAL;
    uint8_t *s = SLOT(base, idx);
    int rc = slot_lock(s, idx, token, live_fd, fd);
    if (rc < 0)
        return rc;
    uint64_t *k = U64(s, PL_CUR_OFF_KEY);
    if (what & PL_CUR_CLEAR) {
        /* readers check the key after the seqlock: bump it around the change */
        uint64_t *seq = U64(s, PL_CUR_OFF_SEQ);
        uint64_t v = __atomic_load_n(seq, __ATOMIC_RELAXED);
        __atomic_store_n(seq, v + 1, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_RELEASE);
        __atomic_store_n(k, 0, __ATOMIC_RELAXED);
        __atomic_store_n(U64(s, PL_CUR_OFF_FENCE), 0, __ATOMIC_RELAXED);
        __atomic_store_n(seq, v + 2, __ATOMIC_RELEASE);
        __atomic_store_n(U64(s, PL_CUR_OFF_CKPT), v + 2, __ATOMIC_RELEASE);
        slot_unlock(s, idx, token, fd);
        return 0;
    }
    if ((what & PL_CUR_CLAIM) && __atomic_load_n(k, __ATOMIC_RELAXED) != key) {
        /* C-3: a slot's first value is the checkpointed one: clean */
        uint64_t *seq = U64(s, PL_CUR_OFF_SEQ);
        uint64_t v = __atomic_load_n(seq, __ATOMIC_RELAXED);
        __atomic_store_n(seq, v + 1, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_RELEASE);
        __atomic_store_n(k, key, __ATOMIC_RELAXED);
        __atomic_store_n(U64(s, PL_CUR_OFF_FENCE), fence, __ATOMIC_RELAXED);
        __atomic_store_n(I64(s, PL_CUR_OFF_OFFSET), offset, __ATOMIC_RELAXED);
        __atomic_store_n(I64(s, PL_CUR_OFF_MS), ms, __ATOMIC_RELAXED);
        __atomic_store_n(seq, v + 2, __ATOMIC_RELEASE);
        __atomic_store_n(U64(s, PL_CUR_OFF_CKPT), v + 2, __ATOMIC_RELEASE);
        rc = 1;
    } else if (__atomic_load_n(k, __ATOMIC_RELAXED) != key) {
        rc = PL_E_STALE;
    }
    if (rc >= 0 && (what & PL_CUR_FENCE))
        __atomic_store_n(U64(s, PL_CUR_OFF_FENCE), fence, __ATOMIC_RELEASE);
    if (rc >= 0 && (what & PL_CUR_STORE))
        slot_store(s, offset, ms);
    slot_unlock(s, idx, token, fd);
    return rc;
}

/* One consistent look at a slot: key, offset, ms, seq, ckpt_seq, fence.
 * 0, or PL_E_BUSY when a writer kept it mid-publish for every try. */
static int slot_snapshot(const uint8_t *s, uint64_t out[6])
{
    const uint64_t *seq = (const uint64_t *)(s + PL_CUR_OFF_SEQ);
    for (int tries = 0; tries < 100000; tries++) {
        uint64_t a = __atomic_load_n(seq, __ATOMIC_ACQUIRE);
        if (a & 1) {
            if (tries > 64)
                sched_yield();
            continue;
        }
        out[0] = __atomic_load_n((const uint64_t *)(s + PL_CUR_OFF_KEY), __ATOMIC_RELAXED);
        out[1] = __atomic_load_n((const uint64_t *)(s + PL_CUR_OFF_OFFSET), __ATOMIC_RELAXED);
        out[2] = __atomic_load_n((const uint64_t *)(s + PL_CUR_OFF_MS), __ATOMIC_RELAXED);
        out[4] = __atomic_load_n((const uint64_t *)(s + PL_CUR_OFF_CKPT), __ATOMIC_RELAXED);
        out[5] = __atomic_load_n((const uint64_t *)(s + PL_CUR_OFF_FENCE), __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(seq, __ATOMIC_RELAXED) == a) {
            out[3] = a;
            return 0;
        }
    }
    return PL_E_BUSY;
}

int pl_cur_read(const void *base, uint64_t map_len, uint32_t idx, uint64_t key, int64_t out[5])
{
    if (!slot_ok(base, map_len, idx) || key == 0 || !out)
        return PL_E_INVAL;
    uint64_t v[6];
    int rc = slot_snapshot(SLOT(base, idx), v);
    if (rc < 0)
        return rc;
    if (v[0] != key)
        return PL_E_STALE;
    out[0] = (int64_t)v[1];
    out[1] = (int64_t)v[2];
    out[2] = (int64_t)v[3];
    out[3] = (int64_t)v[4];
    out[4] = (int64_t)v[5];
    return 0;
}

int pl_cur_dirty(const void *base, uint64_t map_len, uint32_t from, uint32_t *idx_out,
                 int64_t *vals_out, uint32_t max)
{
    if (!base || ((uintptr_t)base & 63) || (max && (!idx_out || !vals_out)))
        return PL_E_INVAL;
    if (map_len < PL_CUR_HEADER)
        return 0;
    uint64_t n = (map_len - PL_CUR_HEADER) / PL_CUR_SLOT;
    uint32_t found = 0;
    for (uint64_t i = from; i < n && found < max; i++) {
        const uint8_t *s = SLOT(base, i);
        /* a clean slot costs two loads: seq and ckpt_seq equal */
        if (__atomic_load_n((const uint64_t *)(s + PL_CUR_OFF_SEQ), __ATOMIC_RELAXED) ==
            __atomic_load_n((const uint64_t *)(s + PL_CUR_OFF_CKPT), __ATOMIC_RELAXED))
            continue;
        uint64_t v[6];
        if (slot_snapshot(s, v) < 0 || v[0] == 0 || v[3] <= v[4])
            continue;
        idx_out[found] = (uint32_t)i;
        vals_out[4 * found + 0] = (int64_t)v[0];
        vals_out[4 * found + 1] = (int64_t)v[1];
        vals_out[4 * found + 2] = (int64_t)v[2];
        vals_out[4 * found + 3] = (int64_t)v[3];
        found++;
    }
    return (int)found;
}

int pl_cur_mark(void *base, uint64_t map_len, uint32_t idx, uint64_t seq)
{
    if (!slot_ok(base, map_len, idx))
        return PL_E_INVAL;
    uint64_t *c = U64(SLOT(base, idx), PL_CUR_OFF_CKPT);
    uint64_t cur = __atomic_load_n(c, __ATOMIC_RELAXED);
    while (cur < seq &&
           !__atomic_compare_exchange_n(c, &cur, seq, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
        ;
    return 0;
}
