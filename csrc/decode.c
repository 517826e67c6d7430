/* Batch header parsing (B-2..B-4), records decoding (R-*), record shapes
 * and the many-batch fetch (P-2). */
#include "internal.h"

/* ------------------------------------------------------------------ */
/* header parsing                                                      */
/* ------------------------------------------------------------------ */

int pli_parse_header(const uint8_t *buf, size_t len, size_t pos, pl_batch_header_out *o,
                     int check_crc)
{
    memset(o, 0, sizeof *o);
    if (!buf || pos > len || len - pos < PL_LOG_OVERHEAD)
        return PL_C_TRUNCATED_HEADER;
    const uint8_t *b = buf + pos;
    o->base_offset = (int64_t)rd64(b + PL_OFF_BASE_OFFSET);
    o->batch_length = (int32_t)rd32(b + PL_OFF_BATCH_LENGTH);
    if (o->batch_length < PL_BATCH_LENGTH_MIN)
        return PL_C_BATCH_LENGTH; /* B-2 */
    if ((uint64_t)o->batch_length + PL_LOG_OVERHEAD > (uint64_t)(len - pos))
        return PL_C_BATCH_TRUNCATED; /* B-2 */
    o->partition_leader_epoch = (int32_t)rd32(b + PL_OFF_PARTITION_LEADER_EPOCH);
    o->magic = (int8_t)b[PL_OFF_MAGIC];
    o->crc = rd32(b + PL_OFF_CRC);
    o->attributes = (int16_t)rd16(b + PL_OFF_ATTRIBUTES);
    o->last_offset_delta = (int32_t)rd32(b + PL_OFF_LAST_OFFSET_DELTA);
    o->base_timestamp = (int64_t)rd64(b + PL_OFF_BASE_TIMESTAMP);
    o->max_timestamp = (int64_t)rd64(b + PL_OFF_MAX_TIMESTAMP);
    o->producer_id = (int64_t)rd64(b + PL_OFF_PRODUCER_ID);
    o->producer_epoch = (int16_t)rd16(b + PL_OFF_PRODUCER_EPOCH);
    o->base_sequence = (int32_t)rd32(b + PL_OFF_BASE_SEQUENCE);
    o->records_count = (int32_t)rd32(b + PL_OFF_RECORDS_COUNT);
    if (o->magic != PL_MAGIC_V2)
        return PL_C_MAGIC; /* B-3 */
    if (check_crc) /* B-4 */
        o->crc_valid = pl_crc32c(0, b + PL_OFF_ATTRIBUTES,
                                 (size_t)o->batch_length + PL_LOG_OVERHEAD - PL_OFF_ATTRIBUTES)
                       == o->crc;
    return 0;
}

int pl_batch_header(const uint8_t *buf, size_t len, size_t pos, pl_batch_header_out *out)
{
    if (!out)
        return PL_E_INVAL;
    return pli_parse_header(buf, len, pos, out, 1);
}

int pl_batch_framing(const uint8_t *buf, size_t len, size_t pos, pl_batch_header_out *out)
{
    if (!out)
        return PL_E_INVAL;
    return pli_parse_header(buf, len, pos, out, 0);
}

/* ------------------------------------------------------------------ */
/* records decoding                                                    */
/* ------------------------------------------------------------------ */

/* a length is >= min and its bytes fit before end. */
static inline int take_len(const uint8_t **pp, const uint8_t *end, int32_t min, int32_t *len_out)
{
    int32_t l;
    int rc = get_varint(pp, end, &l); /* */
    if (rc)
        return rc;
    if (l < min)
        return PL_C_LENGTH; /* */
    if (l > 0) {
        if ((size_t)l > (size_t)(end - *pp))
            return PL_C_LENGTH; /* */
        *pp += l;
    }
    *len_out = l;
    return 0;
}

int pl_records_decode(const uint8_t *recs, size_t len, int32_t count, int32_t last_offset_delta,
                      int64_t *out, int64_t *hdr_out, size_t hdr_cap, size_t *hdr_total,
                      size_t *err_off)
{
    size_t dummy_off, dummy_total;
    if (!err_off) err_off = &dummy_off;
    if (!hdr_total) hdr_total = &dummy_total;
    *err_off = 0;
    *hdr_total = 0;
    if (!recs && len)
        return PL_E_INVAL;
    if (count < 0 || last_offset_delta < 0)
        return PL_C_LAST_OFFSET_DELTA;
    if (count == 0)
        return PL_C_EMPTY_BATCH; /* B-5 */
    /* a record takes at least 7 bytes; cheap reject before any work */
    if ((uint64_t)count * 7 > len)
        return PL_C_COUNT;
    const uint8_t *base = recs, *p = recs, *end = recs + len;
    int64_t prev_delta = -1;
    size_t nh = 0;
    for (int32_t i = 0; i < count; i++) {
        int32_t rlen, od, kl, vl, hc;
        int64_t td;
        int rc;
        *err_off = (size_t)(p - base);
        if (p >= end)
            return PL_C_COUNT; /* fewer records than recordsCount */
        if ((rc = get_varint(&p, end, &rlen)))
            return rc; /* */
        if (rlen < 0 || (size_t)rlen > (size_t)(end - p))
            return PL_C_LENGTH; /* */
        const uint8_t *rend = p + rlen; /* all fields are bounded by the record */
        if (p >= rend)
            return PL_C_RECORD_SIZE; /* no room for attributes */
        p++; /* attributes */
        if ((rc = get_varlong(&p, rend, &td)))
            return rc;
        if ((rc = get_varint(&p, rend, &od)))
            return rc;
        if (od < 0 || od <= prev_delta || od > last_offset_delta)
            return PL_C_OFFSET_DELTA; /* */
        prev_delta = od;
        const uint8_t *kp;
        if ((rc = take_len(&p, rend, -1, &kl)))
            return rc;
        kp = p - (kl > 0 ? kl : 0);
        const uint8_t *vp;
        if ((rc = take_len(&p, rend, -1, &vl)))
            return rc;
        vp = p - (vl > 0 ? vl : 0);
        if ((rc = get_varint(&p, rend, &hc)))
            return rc;
        if (hc < 0)
            return PL_C_HEADERS_COUNT; /* */
        size_t first_hdr = nh;
        for (int32_t j = 0; j < hc; j++) {
            int32_t hkl, hvl;
            if ((rc = take_len(&p, rend, 0, &hkl))) /* header key is a non-null string */
                return rc;
            const uint8_t *hkp = p - hkl;
            if ((rc = take_len(&p, rend, -1, &hvl)))
                return rc;
            const uint8_t *hvp = p - (hvl > 0 ? hvl : 0);
            if (hdr_out && nh < hdr_cap) {
                int64_t *h = hdr_out + PL_HEADER_FIELDS * nh;
                h[0] = hkp - base; h[1] = hkl; h[2] = hvp - base; h[3] = hvl;
            }
            nh++;
        }
        if (p != rend)
            return PL_C_RECORD_SIZE; /* */
        if (out) {
            int64_t *r = out + (size_t)PL_RECORD_FIELDS * (size_t)i;
            r[0] = od; r[1] = td;
            r[2] = kp - base; r[3] = kl;
            r[4] = vp - base; r[5] = vl;
            r[6] = (int64_t)first_hdr; r[7] = hc;
        }
    }
    *err_off = (size_t)(p - base);
    if (p != end)
        return PL_C_TRAILING; /* */
    *hdr_total = nh;
    if (hdr_out && nh > hdr_cap)
        return PL_E_NOSPACE;
    return 0;
}

/* Decimal digits of v >= 0 at o; returns the end or NULL when full.
 * (snprintf would cost more than the whole rest of the loop.) */
static char *put_decimal(char *o, char *end, int64_t v)
{
    char tmp[20];
    int k = 0;
    do {
        tmp[k++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    if (k > end - o)
        return NULL;
    while (k)
        *o++ = tmp[--k];
    return o;
}

/* "<gap>x<len>s" for one field ("0x" is a valid zero-length pad). */
static char *shape_item(char *o, char *end, int64_t gap, int64_t len)
{
    if (!(o = put_decimal(o, end, gap)) || o == end)
        return NULL;
    *o++ = 'x';
    if (!(o = put_decimal(o, end, len)) || o == end)
        return NULL;
    *o++ = 's';
    return o;
}

int pl_records_shape(const int64_t *fields, uint32_t count, int want_keys, int64_t origin,
                     char *fmt, size_t fmt_cap, size_t *fmt_len, uint32_t *flags)
{
    if (!fields || !fmt || !fmt_len || !flags)
        return PL_E_INVAL;
    uint32_t f = PL_SHAPE_DENSE_OFFSETS | PL_SHAPE_SAME_TIMESTAMP;
    char *o = fmt, *end = fmt + fmt_cap;
    int64_t at = origin; /* buffer offset the format has consumed so far */
    if (want_keys && count && fields[3] < 0) {
        f |= PL_SHAPE_NULL_KEYS; /* keyless batch: every key must be null */
        want_keys = 0;
    }
    for (uint32_t i = 0; i < count; i++) {
        const int64_t *r = fields + (size_t)PL_RECORD_FIELDS * i;
        if (r[0] != fields[0] + (int64_t)i)
            f &= ~(uint32_t)PL_SHAPE_DENSE_OFFSETS;
        if (r[1] != fields[1])
            f &= ~(uint32_t)PL_SHAPE_SAME_TIMESTAMP;
        if (r[7] != 0)
            f |= PL_SHAPE_HEADERS;
        if ((f & PL_SHAPE_NULL_KEYS) && r[3] >= 0)
            return PL_E_INVAL; /* null and non-null keys mixed */
        for (int which = want_keys ? 0 : 1; which < 2; which++) {
            int64_t off = r[2 + 2 * which], len = r[3 + 2 * which];
            if (len < 0 || off < at)
                return PL_E_INVAL; /* null field, or not in section order */
            if (!(o = shape_item(o, end, off - at, len)))
                return PL_E_NOSPACE;
            at = off + len;
        }
    }
    *fmt_len = (size_t)(o - fmt);
    *flags = f;
    return 0;
}

int pl_fetch(const uint8_t *seg, size_t end, size_t pos, int64_t expected, int64_t first_base,
             uint32_t max_records, uint32_t soft_records, int64_t *fields, size_t fields_cap,
             int64_t *hdrs, size_t hdr_cap, pl_fetch_out *out)
{
    return pl_fetch_txn(seg, end, pos, expected, first_base, max_records, soft_records, fields,
                        fields_cap, hdrs, hdr_cap, out, INT64_MAX, 0);
}

int pl_fetch_txn(const uint8_t *seg, size_t end, size_t pos, int64_t expected,
                 int64_t first_base, uint32_t max_records, uint32_t soft_records,
                 int64_t *fields, size_t fields_cap, int64_t *hdrs, size_t hdr_cap,
                 pl_fetch_out *out, int64_t stop_offset, int32_t flags)
{
    if (!out || (!seg && end) || !fields || (!hdrs && hdr_cap))
        return PL_E_INVAL;
    memset(out, 0, sizeof *out);
    out->stop = PL_FETCH_END;
    size_t nrec = 0, nhdr = 0;
    /* baseOffset the batch at pos must have (-1: unknown, bracket check) */
    int64_t want_base = first_base;
    while (pos < end) {
        pl_batch_header_out h;
        int rc;
        out->stop_position = (int64_t)pos;
        out->position_base = want_base;
        if (nrec >= max_records || nrec >= soft_records) {
            out->stop = PL_FETCH_FULL;
            break;
        }
        if ((rc = pli_parse_header(seg, end, pos, &h, 1)) == 0 && !h.crc_valid)
            rc = PL_C_CRC; /* B-4 */
        if (rc == 0 && (h.records_count < 0 || h.last_offset_delta < 0))
            rc = PL_C_LAST_OFFSET_DELTA;
        if (rc == 0 && h.records_count == 0)
            rc = PL_C_EMPTY_BATCH; /* B-5: never skip the offsets it claims */
        /* dense offsets: this batch starts where the previous one ended, or
         * (first batch of an unknown one) holds `expected`: baseOffset is
         * outside the CRC, so this is what catches a damaged one */
        if (rc == 0 && (want_base >= 0 ? h.base_offset != want_base
                                        : !(h.base_offset <= expected &&
                                            expected <= h.base_offset +
                                                            (int64_t)h.last_offset_delta)))
            rc = PL_C_OFFSET_MISMATCH;
        if (rc == 0 && expected > h.base_offset + (int64_t)h.last_offset_delta)
            rc = PL_C_OFFSET_MISMATCH; /* resuming past this batch's end */
        if (rc) {
            out->stop = PL_FETCH_CORRUPT;
            out->error = rc;
            break;
        }
        out->position_base = h.base_offset; /* checked: the caller may trust it */
        if (h.base_offset >= stop_offset) { /* the last stable offset */
            out->stop = PL_FETCH_LIMIT;
            break;
        }
        if (h.attributes & PL_ATTR_CONTROL) {
            /* a COMMIT/ABORT marker is never handed to an application
             * (Kafka's consumers skip control batches too); its offsets are
             * passed over like those of any other batch */
            expected = h.base_offset + (int64_t)h.last_offset_delta + 1;
            want_base = expected;
            out->position_base = want_base;
            pos += (size_t)h.batch_length + 12;
            continue;
        }
        if ((flags & PL_FETCH_STOP_TXN) && (h.attributes & PL_ATTR_TRANSACTIONAL)) {
            out->stop = PL_FETCH_TXN; /* read_committed: the caller decides */
            break;
        }
        if (h.attributes & 0x07) {
            out->stop = PL_FETCH_COMPRESSED;
            break;
        }
        if ((size_t)h.records_count > fields_cap - nrec) {
            out->stop = PL_FETCH_ROOM;
            break;
        }
        size_t sec = pos + PL_BATCH_HEADER_SIZE;
        size_t sec_len = (size_t)h.batch_length + 12 - PL_BATCH_HEADER_SIZE;
        int64_t *f = fields + PL_RECORD_FIELDS * nrec;
        size_t htotal = 0, err_off = 0;
        rc = pl_records_decode(seg + sec, sec_len, h.records_count, h.last_offset_delta, f,
                               hdrs ? hdrs + PL_HEADER_FIELDS * nhdr : NULL,
                               hdr_cap - nhdr, &htotal, &err_off);
        if (rc == PL_E_NOSPACE || (rc == 0 && !hdrs && htotal)) {
            out->stop = PL_FETCH_HEADERS;
            break;
        }
        if (rc) {
            out->stop = PL_FETCH_CORRUPT;
            out->error = rc;
            out->error_offset = (int64_t)err_off;
            break;
        }
        /* absolute offsets, timestamps and positions; drop records before
         * `expected` (a batch a previous call returned in part) and past
         * max_records (returned by the next call, which decodes again) */
        int log_append = (h.attributes & 0x08) != 0;
        size_t kept = 0;
        int64_t next = expected;
        int cut = 0;
        for (int32_t i = 0; i < h.records_count; i++) {
            int64_t *r = f + PL_RECORD_FIELDS * (size_t)i;
            int64_t off = h.base_offset + r[0];
            if (off < expected)
                continue;
            if (nrec + kept >= max_records) {
                cut = 1;
                break;
            }
            int64_t *o = f + PL_RECORD_FIELDS * kept;
            int64_t ts = log_append ? h.max_timestamp : h.base_timestamp + r[1];
            int64_t kp = r[2] + (int64_t)sec, kl = r[3];
            int64_t vp = r[4] + (int64_t)sec, vl = r[5];
            int64_t hi = r[6] + (int64_t)nhdr, hc = r[7];
            o[0] = off; o[1] = ts; o[2] = kp; o[3] = kl; o[4] = vp; o[5] = vl;
            o[6] = hi; o[7] = hc;
            kept++;
            next = off + 1;
        }
        for (size_t j = 0; j < htotal; j++) { /* header positions in seg */
            int64_t *e = hdrs + PL_HEADER_FIELDS * (nhdr + j);
            e[0] += (int64_t)sec;
            e[2] += (int64_t)sec;
        }
        nrec += kept;
        nhdr += htotal;
        if (cut) {
            expected = next; /* stopped inside this batch: max_records */
            out->stop = PL_FETCH_FULL;
            break;
        }
        expected = h.base_offset + (int64_t)h.last_offset_delta + 1;
        want_base = expected;
        out->position_base = want_base;
        pos += (size_t)h.batch_length + 12;
    }
    if (out->stop == PL_FETCH_END)
        out->stop_position = (int64_t)pos;
    out->position = (int64_t)pos;
    out->next_offset = expected;
    out->records = (int64_t)nrec;
    out->headers = (int64_t)nhdr;
    return 0;
}
