/* Per-partition counters in partition.state (FORMAT.rst P-10, P-11): what
 * an exporter in another process reads to tell append, fetch and fsync
 * rates, without any process keeping numbers of its own. */
#include "internal.h"

#define CTR(state, off) ((uint64_t *)((uint8_t *)(state) + (off)))

static int state_ok(const void *state)
{
    return state && !((uintptr_t)state & 7);
}

/* P-10: only append lock holders write these words, one at a time: plain
 * stores (no locked instruction on the append path). */
void pli_count_append_locked(void *state, int64_t records, int64_t bytes)
{
    uint64_t *b = CTR(state, PL_CTR_APPEND_BATCHES);
    uint64_t *r = CTR(state, PL_CTR_APPEND_RECORDS);
    uint64_t *n = CTR(state, PL_CTR_APPEND_BYTES);
    __atomic_store_n(b, __atomic_load_n(b, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    __atomic_store_n(r, __atomic_load_n(r, __ATOMIC_RELAXED) + (uint64_t)records,
                     __ATOMIC_RELAXED);
    __atomic_store_n(n, __atomic_load_n(n, __ATOMIC_RELAXED) + (uint64_t)bytes,
                     __ATOMIC_RELAXED);
}

/* P-11: the bucket of a latency: 0 under 2**LOG2 ns, then one per doubling. */
static int fsync_bucket(int64_t ns)
{
    uint64_t q = ns > 0 ? (uint64_t)ns >> PL_CTR_FSYNC_BUCKET0_LOG2 : 0;
    int k = q ? 64 - __builtin_clzll(q) : 0;
    return k < PL_CTR_FSYNC_NBUCKETS ? k : PL_CTR_FSYNC_NBUCKETS - 1;
}

void pli_count_fsync(void *state, int64_t ns)
{
    if (!state_ok(state))
        return;
    if (ns < 0)
        ns = 0;
    __atomic_fetch_add(CTR(state, PL_CTR_FSYNCS), 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(CTR(state, PL_CTR_FSYNC_NS), (uint64_t)ns, __ATOMIC_RELAXED);
    __atomic_fetch_add(CTR(state, PL_CTR_FSYNC_BUCKETS + 8 * fsync_bucket(ns)), 1,
                       __ATOMIC_RELAXED);
}

int pl_count_append(void *state, int64_t records, int64_t bytes)
{
    if (!state_ok(state) || records < 0 || bytes < 0)
        return PL_E_INVAL;
    pli_count_append_locked(state, records, bytes);
    return 0;
}

int pl_count_fetch(void *state, int64_t records)
{
    if (!state_ok(state) || records < 0)
        return PL_E_INVAL;
    __atomic_fetch_add(CTR(state, PL_CTR_FETCHES), 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(CTR(state, PL_CTR_FETCH_RECORDS), (uint64_t)records, __ATOMIC_RELAXED);
    return 0;
}

int pl_count_fsync(void *state, int64_t ns)
{
    if (!state_ok(state))
        return PL_E_INVAL;
    pli_count_fsync(state, ns);
    return 0;
}

int pl_counters_read(const void *state, uint64_t *out)
{
    if (!state_ok(state) || !out)
        return PL_E_INVAL;
    static const int at[7] = {PL_CTR_APPEND_BATCHES, PL_CTR_APPEND_RECORDS, PL_CTR_APPEND_BYTES,
                              PL_CTR_FETCHES, PL_CTR_FETCH_RECORDS, PL_CTR_FSYNCS,
                              PL_CTR_FSYNC_NS};
    for (int i = 0; i < 7; i++)
        out[i] = __atomic_load_n((const uint64_t *)((const uint8_t *)state + at[i]),
                                 __ATOMIC_RELAXED);
    for (int k = 0; k < PL_CTR_FSYNC_NBUCKETS; k++)
        out[7 + k] = __atomic_load_n(
            (const uint64_t *)((const uint8_t *)state + PL_CTR_FSYNC_BUCKETS + 8 * k),
            __ATOMIC_RELAXED);
    return 0;
}
