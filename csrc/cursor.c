/* The commit table: committed offsets in a shared file map (FORMAT.rst C-*).
 *
 * A slot is 64 bytes at PL_CUR_HEADER + idx * PL_CUR_SLOT (native byte
 * order, see pylog_native.h for the field offsets).  Writers take the
 * slot's lock word (the Log token, as the partition append lock does, so a
 * SIGKILLed holder is taken over, never waited on for ever) and publish
 * through a seqlock, so readers never write and never block a writer.
 * Garbage written over the file (C-7) is told by values no writer stores
 * and by a seq odd for longer than a bounded spin; readers report it,
 * writers empty such a slot under its lock (pl_cur_repair, slot_fix). */
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

/* C-7: no writer stores a seq this high (2 per commit: never reached), and
 * no Log has a token above pl_liveness_lock's limit. */
#define SEQ_LIMIT ((uint64_t)1 << 62)
#define TOKEN_MAX 0x7fffffffu
/* How long a reader waits for an odd seq to close: far longer than the few
 * stores a writer publishes (nanoseconds), yet microseconds per slot, so a
 * table full of garbage is scanned in milliseconds; then PL_E_BUSY and the
 * caller takes the slot's lock (pl_cur_repair), which waits for a live
 * writer and takes a dead one's over. */
#define SPIN_TRIES 256
#define SPIN_YIELD_AFTER 64

/* C-7: do a slot's stable values (key, offset, ms, seq, ckpt_seq, fence) and
 * its lock word hold what writers store? */
static int slot_sane(const uint64_t v[6], uint32_t lock)
{
    return v[3] < SEQ_LIMIT && !(v[3] & 1) && !(v[4] & 1) && v[4] <= v[3] &&
           (int64_t)v[1] >= -1 && lock <= TOKEN_MAX;
}

/* Take the slot's lock.  0, PL_E_BUSY (a live holder and wait 0), or a
 * negative status. */
static int slot_lock(uint8_t *s, uint32_t idx, uint32_t token, int live_fd, int fd, int wait)
{
#ifdef PL_FUTEX_LOCK
    (void)idx;
    (void)fd;
    int rc = pl_word_lock(U32(s, PL_CUR_OFF_LOCK), token, live_fd, wait);
    return rc == 1 ? 0 : rc;  /* a dead holder's half store: slot_fix closes it */
#else
    (void)s;
    (void)token;
    (void)live_fd;
    int rc = pl_lock(fd, (int64_t)PL_CUR_HEADER + (int64_t)idx * PL_CUR_SLOT, 1, 2, wait);
    return (rc == -EAGAIN || rc == -EACCES) ? PL_E_BUSY : rc;
#endif
}

/* Under the slot's lock, where no writer is mid-publish: close a seq left
 * odd (a holder that died mid-store: every field is a whole word, old or
 * new), then empty the slot when it holds what no writer stores (C-7), or
 * when ``empty``: free (key 0, C-2) and clean, as CLEAR leaves it, so its
 * key's offset comes from LMDB and its next commit claims it (C-3).
 * 1 when emptied, else 0. */
static int slot_fix(uint8_t *s, int empty)
{
    uint64_t *seq = U64(s, PL_CUR_OFF_SEQ);
    uint64_t v = __atomic_load_n(seq, __ATOMIC_RELAXED);
    if (v & 1) {
        v += 1;
        __atomic_store_n(seq, v, __ATOMIC_RELEASE);
    }
    uint64_t vals[6] = {*U64(s, PL_CUR_OFF_KEY), *U64(s, PL_CUR_OFF_OFFSET),
                        *U64(s, PL_CUR_OFF_MS), v, *U64(s, PL_CUR_OFF_CKPT),
                        *U64(s, PL_CUR_OFF_FENCE)};
    if (!empty && slot_sane(vals, 0))
        return 0;
    /* a new seq a reader's old one cannot equal (unless garbage was 2) */
    uint64_t nv = v < SEQ_LIMIT - 2 ? v + 2 : 2;
    __atomic_store_n(seq, v | 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    __atomic_store_n(U64(s, PL_CUR_OFF_KEY), 0, __ATOMIC_RELAXED);
    __atomic_store_n(U64(s, PL_CUR_OFF_FENCE), 0, __ATOMIC_RELAXED);
    __atomic_store_n(I64(s, PL_CUR_OFF_OFFSET), 0, __ATOMIC_RELAXED);
    __atomic_store_n(I64(s, PL_CUR_OFF_MS), 0, __ATOMIC_RELAXED);
    __atomic_store_n(U64(s, PL_CUR_OFF_CKPT), nv, __ATOMIC_RELAXED);
    __atomic_store_n(seq, nv, __ATOMIC_RELEASE);
    return 1;
}

/* The lock of a writer: taken, waiting, and the slot made sound. */
static int slot_take(uint8_t *s, uint32_t idx, uint32_t token, int live_fd, int fd)
{
    int rc = slot_lock(s, idx, token, live_fd, fd, 1);
    if (rc < 0)
        return rc;
    slot_fix(s, 0);
    return 0;
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
    int rc = slot_take(s, idx, token, live_fd, fd);
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
    int rc = slot_take(s, idx, token, live_fd, fd);
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
 * 0, PL_E_BUSY when the seq stayed odd for the whole bounded spin, or
 * PL_E_DAMAGED (C-7) when the slot holds what no writer stores. */
static int slot_snapshot(const uint8_t *s, uint64_t out[6])
{
    const uint64_t *seq = (const uint64_t *)(s + PL_CUR_OFF_SEQ);
    const uint32_t *lock = (const uint32_t *)(s + PL_CUR_OFF_LOCK);
    for (int tries = 0; tries < SPIN_TRIES; tries++) {
        uint64_t a = __atomic_load_n(seq, __ATOMIC_ACQUIRE);
        if (a & 1) {
#ifdef PL_FUTEX_LOCK
            /* a writer publishes holding the lock word and closes the seq
             * before it lets go: odd while no Log holds it is damage */
            uint32_t w = __atomic_load_n(lock, __ATOMIC_ACQUIRE);
            if ((w == 0 || w > TOKEN_MAX) && __atomic_load_n(seq, __ATOMIC_ACQUIRE) == a)
                return PL_E_DAMAGED;
#endif
            if (tries >= SPIN_YIELD_AFTER)
                sched_yield();
            continue;
        }
        out[0] = __atomic_load_n((const uint64_t *)(s + PL_CUR_OFF_KEY), __ATOMIC_RELAXED);
        out[1] = __atomic_load_n((const uint64_t *)(s + PL_CUR_OFF_OFFSET), __ATOMIC_RELAXED);
        out[2] = __atomic_load_n((const uint64_t *)(s + PL_CUR_OFF_MS), __ATOMIC_RELAXED);
        out[4] = __atomic_load_n((const uint64_t *)(s + PL_CUR_OFF_CKPT), __ATOMIC_RELAXED);
        out[5] = __atomic_load_n((const uint64_t *)(s + PL_CUR_OFF_FENCE), __ATOMIC_RELAXED);
        uint32_t w = __atomic_load_n(lock, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(seq, __ATOMIC_RELAXED) == a) {
            out[3] = a;
            return slot_sane(out, w) ? 0 : PL_E_DAMAGED;
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
        if (slot_snapshot(s, v) < 0) {
            /* busy or damaged: the caller repairs it (pl_cur_repair) */
            v[0] = __atomic_load_n((const uint64_t *)(s + PL_CUR_OFF_KEY), __ATOMIC_RELAXED);
            v[1] = v[2] = 0;
            v[3] = (uint64_t)(int64_t)PL_CUR_SEQ_BAD;
        } else if (v[0] == 0 || v[3] <= v[4]) {
            continue;
        }
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
    uint8_t *s = SLOT(base, idx);
    /* a seq past the slot's own was read before the slot was emptied (C-7):
     * a ckpt_seq past seq would be damage */
    if (seq > __atomic_load_n(U64(s, PL_CUR_OFF_SEQ), __ATOMIC_ACQUIRE))
        return 0;
    uint64_t *c = U64(s, PL_CUR_OFF_CKPT);
    uint64_t cur = __atomic_load_n(c, __ATOMIC_RELAXED);
    while (cur < seq &&
           !__atomic_compare_exchange_n(c, &cur, seq, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
        ;
    return 0;
}

int pl_cur_repair(void *base, uint64_t map_len, uint32_t idx, uint32_t token, int live_fd,
                  int fd, int wait, int empty)
{
    if (!slot_ok(base, map_len, idx) || token == 0)
        return PL_E_INVAL;
    uint8_t *s = SLOT(base, idx);
    int rc = slot_lock(s, idx, token, live_fd, fd, wait);
    if (rc < 0)
        return rc;
    rc = slot_fix(s, empty);
    slot_unlock(s, idx, token, fd);
    return rc;
}
