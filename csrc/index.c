/* Offset index (I-1, I-2) and time index (T-1..T-3) lookups and checks. */
#include "internal.h"

/* ------------------------------------------------------------------ */
/* indexes                                                             */
/* ------------------------------------------------------------------ */

int pl_index_lookup(const uint8_t *idx, size_t len, int32_t target_rel, int32_t *rel_out,
                    int32_t *pos_out)
{
    if ((!idx && len) || !rel_out || !pos_out)
        return PL_E_INVAL;
    size_t n = len / 8, lo = 0, hi = n; /* find first entry with rel > target */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if ((int32_t)rd32(idx + 8 * mid) <= target_rel)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return 1;
    *rel_out = (int32_t)rd32(idx + 8 * (lo - 1));
    *pos_out = (int32_t)rd32(idx + 8 * (lo - 1) + 4);
    return 0;
}

int64_t pl_index_validate(const uint8_t *idx, size_t len, int64_t segment_size)
{
    if (!idx && len)
        return PL_E_INVAL;
    size_t n = len / 8;
    int64_t prev_rel = -1, prev_pos = -1;
    for (size_t i = 0; i < n; i++) {
        int32_t rel = (int32_t)rd32(idx + 8 * i), pos = (int32_t)rd32(idx + 8 * i + 4);
        if (rel < 0 || rel <= prev_rel || pos < 0 || pos <= prev_pos || pos >= segment_size)
            return (int64_t)(8 * i) + 1;
        prev_rel = rel;
        prev_pos = pos;
    }
    if (len % 8)
        return (int64_t)(8 * n) + 1;
    return 0;
}

int pl_timeindex_lookup(const uint8_t *tidx, size_t len, int64_t target_ts, int64_t *ts_out,
                        int32_t *rel_out)
{
    if ((!tidx && len) || !ts_out || !rel_out)
        return PL_E_INVAL;
    size_t n = len / 12, lo = 0, hi = n; /* first entry with ts >= target */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if ((int64_t)rd64(tidx + 12 * mid) < target_ts)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return 1;
    *ts_out = (int64_t)rd64(tidx + 12 * (lo - 1));
    *rel_out = (int32_t)rd32(tidx + 12 * (lo - 1) + 8);
    return 0;
}

int64_t pl_timeindex_validate(const uint8_t *tidx, size_t len)
{
    if (!tidx && len)
        return PL_E_INVAL;
    size_t n = len / 12;
    int64_t prev_ts = INT64_MIN, prev_rel = INT64_MIN;
    for (size_t i = 0; i < n; i++) {
        int64_t ts = (int64_t)rd64(tidx + 12 * i);
        int32_t rel = (int32_t)rd32(tidx + 12 * i + 8);
        if (ts < prev_ts || rel < 0 || rel < prev_rel)
            return (int64_t)(12 * i) + 1;
        prev_ts = ts;
        prev_rel = rel;
    }
    if (len % 12)
        return (int64_t)(12 * n) + 1;
    return 0;
}
