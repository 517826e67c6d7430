/* One-call append (P-2, P-3, I-2, L-3) and the GIL hand-off hold. */
#include "internal.h"

/* ------------------------------------------------------------------ */
/* one-call append                                                     */
/* ------------------------------------------------------------------ */

static const pl_batch_meta default_meta = {
    .producer_id = -1, .producer_epoch = -1, .base_sequence = -1,
};

static int append_locked(pl_appender *a, uint32_t n, src_t *src, int use_scratch)
{
    void *state = a->state;
    uint8_t *seg = a->seg;
    size_t seg_cap = (size_t)a->seg_cap;
    int64_t seg_base = a->seg_base;
    pl_append_out *out = &a->out;
    pl_state_t *s = (pl_state_t *)state;
    if (__atomic_load_n(&s->magic, __ATOMIC_ACQUIRE) != PL_STATE_MAGIC)
        return PL_E_STALE;
    /* P-3: a dead holder's leftovers (a torn batch past the end, a roll's
     * next segment) are cleaned up by the caller before anything goes in */
    if (__atomic_load_n((uint32_t *)((uint8_t *)state + PL_STATE_TAKEOVER), __ATOMIC_ACQUIRE))
        return PL_E_STALE;
    pl_state_repair(state); /* P-3: we hold the lock; a dead writer's odd seq is stale */
    int64_t v[6];
    for (int i = 0; i < 6; i++)
        v[i] = __atomic_load_n(&s->vals[i], __ATOMIC_RELAXED);
    int64_t next = v[0], base = v[1], pos = v[2], maxts = v[3];
    out->next_offset = next;
    out->active_base = base;
    out->position = pos;
    out->max_timestamp = maxts;
    out->generation = v[4];
    out->log_start = v[5];
    if (next == -1)
        return PL_E_DELETED; /* P-2 */
    if (!seg || base != seg_base || pos < 0 || (uint64_t)pos > seg_cap)
        return PL_E_STALE;
    pl_batch_meta m = default_meta;
    if (a->producer_set) { /* */
        m.producer_id = a->producer_id;
        m.producer_epoch = a->producer_epoch;
        m.base_sequence = a->base_sequence;
        m.attributes = a->producer_attributes;
    }
    m.base_offset = next;
    pli_batch_plan_t plan;
    int rc = pli_batch_plan(&m, n, src, &plan);
    if (rc != 0)
        return rc;
    size_t written = plan.total;
    out->size = (int64_t)written;
    if (written > seg_cap - (size_t)pos)
        return PL_E_NOSPACE;
    if (use_scratch && written >= PL_APPEND_WRITE_BYTES_MIN && written <= a->scratch_cap &&
        a->scratch && a->seg_fd >= 0) {
        /* A batch of a page or more fills pages the map has not touched: one
         * write() copies it into the page cache for a third of what faulting
         * those pages in through the map costs (measured on a VM: 1.3 vs
         * 4.4 us per page). Readers see it through their maps all the same
         * (one page cache); nothing is published before it is all there. */
        pli_batch_write(a->scratch, &m, n, src, &plan);
        size_t done = 0;
        while (done < written) {
            ssize_t w = pwrite(a->seg_fd, a->scratch + done, written - done,
                               (off_t)(pos + (int64_t)done));
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                int e = w < 0 ? errno : EIO;
                return -e;
            }
            done += (size_t)w;
        }
    } else {
        pli_batch_write(seg + pos, &m, n, src, &plan);
    }
    int64_t batch_max = plan.max_ts;
    int64_t last = next + (int64_t)n - 1;
    if (batch_max > maxts)
        maxts = batch_max;
    int64_t nv[6] = {last + 1, base, pos + (int64_t)written, maxts, v[4], v[5]};
    pl_state_publish(state, nv); /* P-2: visible now, whole */
    pli_count_append_locked(state, n, (int64_t)written); /* P-10 */
    out->base_offset = next;
    out->next_offset = last + 1;
    out->max_timestamp = maxts;
    a->written_base = base;
    a->written_end = pos + (int64_t)written;
    /* release: pl_sync_through reads it before syncing what it covers */
    __atomic_store_n(&a->written_next, last + 1, __ATOMIC_RELEASE);
    /* I-2 / T-2: entries are derived data; a failed write is reported, the
     * append itself stands. */
    int64_t *last_idx = (int64_t *)((uint8_t *)state + PL_STATE_INDEX_POSITION);
    if (a->index_fd >= 0 && pos - *last_idx >= a->index_interval) {
        uint8_t e[8], t[12];
        wr32(e, (uint32_t)(last - base));
        wr32(e + 4, (uint32_t)pos);
        wr64(t, (uint64_t)maxts);
        wr32(t + 8, (uint32_t)(last - base));
        if (write(a->index_fd, e, 8) != 8 ||
            (a->timeindex_fd >= 0 && write(a->timeindex_fd, t, 12) != 12)) {
            out->index_errno = errno ? errno : EIO;
        } else {
            *last_idx = pos;
            out->index_written = 1;
        }
    }
    return 0;
}

/* After a ring: when readers of this process were waiting on this
 * partition (w, sampled with h0 before the ring), return only once one of
 * them has taken the GIL (handoff[0] moved from h0) or hold_max_ns passed.
 * Without this the appending thread, which is running, takes the GIL back
 * first, and the woken reader waits for it to block and then for a second
 * wake-up: the hand-off costs twice. Only for a ring hold_gap_ns or more
 * after the end of this appender's previous one: a producer appending back
 * to back (whose readers wake often and drain many records at a time) is
 * never held. The wait yields the CPU every few spins (the reader may need
 * this one). */
static void hold_for_reader(pl_appender *a, uint32_t w, uint32_t h0)
{
    int64_t t0 = pli_mono_ns(), prev = a->last_ring_ns;
    a->last_ring_ns = t0;
    if (!w || a->hold_max_ns <= 0 || t0 - prev < a->hold_gap_ns)
        return;
    for (long i = 1; __atomic_load_n(&a->handoff[0], __ATOMIC_SEQ_CST) == h0; i++) {
        if ((i & 63) == 0) {
            if (pli_mono_ns() - t0 > a->hold_max_ns)
                break;
            sched_yield();
        } else {
            cpu_relax();
        }
    }
    a->last_ring_ns = pli_mono_ns();     /* the next append's gap counts from here */
}

/* use_scratch: the caller set a->scratch for this call (a pointer left from
 * an earlier call may be gone: the one-record form never uses it). */
static int append_src(pl_appender *a, uint32_t n, src_t *src, int use_scratch)
{
    if (!a || !a->state || ((uintptr_t)a->state & 7))
        return PL_E_INVAL;
    memset(&a->out, 0, sizeof a->out);
    if (a->lock_token != 0) {
        int lrc = pl_plock_acquire(a->state, a->lock_token, a->live_fd, a->state_fd, 1);
        if (lrc < 0)
            return lrc;
    }
    int rc = append_locked(a, n, src, use_scratch);
    if (a->lock_token != 0)
        pl_plock_release(a->state, a->lock_token, a->state_fd);
    if (rc == 0 && a->out.index_errno)
        rc = PL_APPEND_INDEX_FAILED;
    if (rc >= 0 && a->bell) {
        uint8_t *b = (uint8_t *)a->bell;
        uint32_t w = 0, h0 = 0;
        if (a->handoff) {
            h0 = __atomic_load_n(&a->handoff[0], __ATOMIC_SEQ_CST);
            w = __atomic_load_n(&a->handoff[1], __ATOMIC_SEQ_CST);
        }
        pl_doorbell_ring(b + (size_t)a->slot * PL_DOORBELL_SLOT_SIZE); /* L-3 */
        if (a->slot != 0)
            pl_doorbell_ring(b);
        if (a->handoff)
            hold_for_reader(a, w, h0);
    }
    return rc;
}

int pl_append_packed(pl_appender *a, uint32_t n, const int64_t *stream, size_t stream_len,
                     const uint8_t *blob, size_t blob_len)
{
    PACKED_SRC(s);
    return append_src(a, n, &s, 1);
}

/* The column source of both pl_append_columns calls: one timestamp for
 * every record, or each its own (timestamps non-NULL). */
static int append_columns(pl_appender *a, uint32_t n, int64_t timestamp,
                          const int64_t *timestamps, const int32_t *key_lens,
                          int64_t key_len, const uint8_t *keys, size_t keys_len,
                          const int32_t *value_lens, int64_t value_len,
                          const uint8_t *values, size_t values_len)
{
    src_t s;
    memset(&s, 0, sizeof s);
    if ((!keys && keys_len) || (!values && values_len))
        return PL_E_INVAL;
    s.columns = 1; s.col_ts = timestamp; s.timestamps = timestamps; s.col_n = n;
    s.col_lens[0] = key_lens; s.col_len[0] = key_len;
    s.col_blob[0] = keys; s.col_blob_len[0] = keys_len;
    s.col_lens[1] = value_lens; s.col_len[1] = value_len;
    s.col_blob[1] = values; s.col_blob_len[1] = values_len;
    return append_src(a, n, &s, 1);
}

int pl_append_columns(pl_appender *a, uint32_t n, int64_t timestamp,
                      const int32_t *key_lens, int64_t key_len, const uint8_t *keys,
                      size_t keys_len, const int32_t *value_lens, int64_t value_len,
                      const uint8_t *values, size_t values_len)
{
    return append_columns(a, n, timestamp, NULL, key_lens, key_len, keys, keys_len,
                          value_lens, value_len, values, values_len);
}

/* As pl_append_columns, each record with its own timestamp (timestamps[i]):
 * a lingering producer's batch, whose records were sent over time. */
int pl_append_columns_ts(pl_appender *a, uint32_t n, const int64_t *timestamps,
                         const int32_t *key_lens, int64_t key_len, const uint8_t *keys,
                         size_t keys_len, const int32_t *value_lens, int64_t value_len,
                         const uint8_t *values, size_t values_len)
{
    if (!timestamps)
        return PL_E_INVAL;
    return append_columns(a, n, 0, timestamps, key_lens, key_len, keys, keys_len,
                          value_lens, value_len, values, values_len);
}

int64_t pl_append_record(pl_appender *a, int64_t timestamp, const uint8_t *key,
                         int64_t key_len, const uint8_t *value, int64_t value_len)
{
    src_t s;
    memset(&s, 0, sizeof s);
    /* span_take refuses a NULL pointer with a positive length */
    s.timestamps = &timestamp; s.keys = &key; s.key_lens = &key_len;
    s.values = &value; s.value_lens = &value_len;
    int rc = append_src(a, 1, &s, 0);
    if (rc == 0)
        return a->out.base_offset;
    return rc == PL_APPEND_INDEX_FAILED ? PL_E_APPENDED_NO_INDEX : rc;
}

/* One record with one header (a header key is never null; a value length
 * of -1 is a null value, R-*): the commonest headers= shape of send(), one
 * call with no allocation. Returns as pl_append_record. */
int64_t pl_append_record_h1(pl_appender *a, int64_t timestamp, const uint8_t *key,
                            int64_t key_len, const uint8_t *value, int64_t value_len,
                            const uint8_t *hkey, int64_t hkey_len, const uint8_t *hval,
                            int64_t hval_len)
{
    int32_t one = 1;
    src_t s;
    memset(&s, 0, sizeof s);
    s.timestamps = &timestamp; s.keys = &key; s.key_lens = &key_len;
    s.values = &value; s.value_lens = &value_len;
    s.header_counts = &one; s.hkeys = &hkey; s.hkey_lens = &hkey_len;
    s.hvals = &hval; s.hval_lens = &hval_len;
    int rc = append_src(a, 1, &s, 0);
    if (rc == 0)
        return a->out.base_offset;
    return rc == PL_APPEND_INDEX_FAILED ? PL_E_APPENDED_NO_INDEX : rc;
}
