/* Segment scan (P-4 recovery, I-2 index entries). */
#include "internal.h"

/* ------------------------------------------------------------------ */
/* segment scan                                                        */
/* ------------------------------------------------------------------ */

/* Checks a batch fully (framing, magic, CRC, offset range). */
static int batch_ok(const uint8_t *buf, size_t len, size_t pos, int64_t expected,
                    int64_t seg_base, pl_batch_header_out *h, int64_t *last)
{
    int rc = pli_parse_header(buf, len, pos, h, 1);
    if (rc)
        return rc;
    if (!h->crc_valid)
        return PL_C_CRC; /* B-4 */
    if (h->last_offset_delta < 0 || h->records_count < 0)
        return PL_C_LAST_OFFSET_DELTA;
    if (h->records_count == 0)
        return PL_C_EMPTY_BATCH; /* B-5: it would claim offsets holding nothing */
    if (expected >= 0 && h->base_offset != expected) /* S-2: dense offsets */
        return PL_C_OFFSET_MISMATCH;
    if (__builtin_add_overflow(h->base_offset, (int64_t)h->last_offset_delta, last))
        return PL_C_OFFSET_RANGE;
    if (h->base_offset < seg_base || *last - seg_base > INT32_MAX)
        return PL_C_OFFSET_RANGE;
    return 0;
}

int pl_segment_scan(const uint8_t *buf, size_t len, size_t start_pos, int64_t expected_offset,
                    int64_t segment_base_offset, int64_t index_interval_bytes,
                    int64_t bytes_since_last_entry, int64_t max_timestamp_in,
                    int32_t *idx_out, int64_t *tidx_out, size_t entry_cap, pl_scan_out *out)
{
    if (!out || (!buf && len) || start_pos > len || (entry_cap && (!idx_out || !tidx_out)))
        return PL_E_INVAL;
    memset(out, 0, sizeof *out);
    size_t pos = start_pos, ne = 0;
    int64_t expected = expected_offset, next = expected_offset;
    int64_t maxts = max_timestamp_in, bsle = bytes_since_last_entry;
    int64_t nb = 0;
    int reason = 0, cont = 0, capstop = 0;
    int64_t errpos = -1;

    for (;;) {
        if (pos >= len)
            break; /* clean end of buffer */
        size_t rem = len - pos;
        if (rem < 12) {
            int zero = 1;
            for (size_t i = 0; i < rem; i++)
                if (buf[pos + i]) { zero = 0; break; }
            if (!zero) { reason = PL_C_TRUNCATED_HEADER; errpos = (int64_t)pos; }
            break;
        }
        if (rd32(buf + pos + 8) == 0)
            break; /* zero batchLength: preallocated zero-filled tail, normal end (S-3) */
        pl_batch_header_out h;
        int64_t last = 0;
        int rc = batch_ok(buf, len, pos, expected, segment_base_offset, &h, &last);
        if (!rc && (bsle >= index_interval_bytes) && pos > (size_t)INT32_MAX)
            rc = PL_C_POSITION_RANGE;
        if (rc) {
            reason = rc;
            errpos = (int64_t)pos;
            /* Mid-log corruption or torn tail?  If the bad batch's declared size
             * is sane and a fully valid batch with a later offset starts right
             * after it, the log continues past the damage. */
            if (rem >= 12) {
                int32_t bl = (int32_t)rd32(buf + pos + 8);
                if (bl >= PL_BATCH_HEADER_SIZE - 12 && (uint64_t)bl + 12 <= rem) {
                    pl_batch_header_out h2;
                    int64_t last2;
                    size_t npos = pos + 12 + (size_t)bl;
                    if (batch_ok(buf, len, npos, -1, segment_base_offset, &h2, &last2) == 0 &&
                        (expected < 0 || h2.base_offset > expected))
                        cont = 1;
                }
            }
            break;
        }
        int64_t size = (int64_t)h.batch_length + 12;
        int64_t newmax = h.max_timestamp > maxts ? h.max_timestamp : maxts;
        int32_t rel = (int32_t)(last - segment_base_offset);
        if (bsle >= index_interval_bytes) {
            if (ne >= entry_cap) {
                capstop = 1; /* caller continues from end_position */
                break;
            }
            idx_out[2 * ne] = rel;
            idx_out[2 * ne + 1] = (int32_t)pos;
            tidx_out[2 * ne] = newmax;
            tidx_out[2 * ne + 1] = rel;
            ne++;
            bsle = 0;
        }
        bsle += size;
        maxts = newmax;
        next = last + 1;
        expected = expected_offset >= 0 ? next : -1;
        nb++;
        pos += (size_t)size;
    }
    out->end_position = (int64_t)pos;
    out->next_offset = next;
    out->max_timestamp = maxts;
    out->batch_count = nb;
    out->error_position = errpos;
    out->error_reason = reason;
    out->continues_after_error = cont;
    out->bytes_since_last_entry = bsle;
    out->capacity_stop = capstop;
    return (int)ne;
}
