/* RecordBatch v2 encoders (B-1, R-*): sized first, then written. */
#include "internal.h"

/* ------------------------------------------------------------------ */
/* record sources for the encoders                                     */
/* ------------------------------------------------------------------ */


static int span_take(src_t *s, const uint8_t *const *ptrs, size_t idx, int64_t len, int allow_null,
                     span_t *out)
{
    if (len < (allow_null ? -1 : 0) || len > INT32_MAX)
        return PL_E_INVAL;
    out->len = len;
    out->p = NULL;
    if (len <= 0)
        return 0;
    if (s->packed) {
        if ((uint64_t)len > s->blob_len - s->bpos)
            return PL_E_INVAL;
        out->p = s->blob + s->bpos;
        s->bpos += (size_t)len;
    } else {
        if (!ptrs || !ptrs[idx])
            return PL_E_INVAL;
        out->p = ptrs[idx];
    }
    return 0;
}

static int src_record(src_t *s, int64_t *ts, span_t *k, span_t *v, int32_t *hc)
{
    int rc;
    int64_t kl, vl, h;
    size_t i = s->rec++;
    if (s->columns) {
        if (i >= s->col_n)
            return PL_E_INVAL;
        /* per-record timestamps (pl_append_columns_ts), or one for all */
        *ts = s->timestamps ? s->timestamps[i] : s->col_ts;
        *hc = 0;
        span_t *out[2] = {k, v};
        for (int c = 0; c < 2; c++) {
            int64_t len = s->col_lens[c] ? s->col_lens[c][i] : s->col_len[c];
            if (len < -1 || len > INT32_MAX)
                return PL_E_INVAL;
            out[c]->len = len;
            out[c]->p = NULL;
            if (len > 0) {
                if ((uint64_t)len > s->col_blob_len[c] - s->col_pos[c])
                    return PL_E_INVAL;
                out[c]->p = s->col_blob[c] + s->col_pos[c];
                s->col_pos[c] += (size_t)len;
            }
        }
        return 0;
    } else if (s->packed) {
        if (s->stream_len - s->spos < 4)
            return PL_E_INVAL;
        const int64_t *m = s->stream + s->spos;
        *ts = m[0]; kl = m[1]; vl = m[2]; h = m[3];
        s->spos += 4;
    } else {
        if (!s->timestamps || !s->key_lens || !s->value_lens)
            return PL_E_INVAL;
        *ts = s->timestamps[i];
        kl = s->key_lens[i];
        vl = s->value_lens[i];
        h = s->header_counts ? s->header_counts[i] : 0;
    }
    if (h < 0 || h > INT32_MAX)
        return PL_E_INVAL;
    *hc = (int32_t)h;
    if ((rc = span_take(s, s->keys, i, kl, 1, k)))
        return rc;
    return span_take(s, s->values, i, vl, 1, v);
}

static int src_header(src_t *s, span_t *k, span_t *v)
{
    int rc;
    int64_t kl, vl;
    size_t i = s->hdr++;
    if (s->packed) {
        if (s->stream_len - s->spos < 2)
            return PL_E_INVAL;
        kl = s->stream[s->spos];
        vl = s->stream[s->spos + 1];
        s->spos += 2;
    } else {
        if (!s->hkey_lens || !s->hval_lens)
            return PL_E_INVAL;
        kl = s->hkey_lens[i];
        vl = s->hval_lens[i];
    }
    if ((rc = span_take(s, s->hkeys, i, kl, 0, k)))
        return rc;
    return span_take(s, s->hvals, i, vl, 1, v);
}

/* Size pass: validates the source and computes the records section size. */
static int records_size(src_t s, uint32_t n, int64_t base_ts, size_t *size_out, int64_t *max_ts)
{
    if (n == 0 || n > (uint32_t)INT32_MAX)
        return PL_E_INVAL;
    uint64_t total = 0;
    int64_t mx = INT64_MIN;
    for (uint32_t i = 0; i < n; i++) {
        int64_t ts, td;
        span_t k, v;
        int32_t hc;
        int rc = src_record(&s, &ts, &k, &v, &hc);
        if (rc)
            return rc;
        if (__builtin_sub_overflow(ts, base_ts, &td))
            return PL_E_INVAL;
        if (ts > mx)
            mx = ts;
        uint64_t body = 1 + uvar_size(zz64(td)) + uvar_size(zz32((int32_t)i));
        body += uvar_size(zz32((int32_t)k.len)) + (k.len > 0 ? (uint64_t)k.len : 0);
        body += uvar_size(zz32((int32_t)v.len)) + (v.len > 0 ? (uint64_t)v.len : 0);
        body += uvar_size(zz32(hc));
        for (int32_t j = 0; j < hc; j++) {
            span_t hk, hv;
            if ((rc = src_header(&s, &hk, &hv)))
                return rc;
            body += uvar_size(zz32((int32_t)hk.len)) + (uint64_t)hk.len;
            body += uvar_size(zz32((int32_t)hv.len)) + (hv.len > 0 ? (uint64_t)hv.len : 0);
            if (body > (uint64_t)INT32_MAX)
                return PL_E_INVAL;
        }
        if (body > (uint64_t)INT32_MAX)
            return PL_E_INVAL;
        total += uvar_size(zz32((int32_t)body)) + body;
        if (total > (uint64_t)INT32_MAX)
            return PL_E_INVAL;
    }
    if (s.packed && (s.spos != s.stream_len || s.bpos != s.blob_len))
        return PL_E_INVAL; /* stream/blob do not match the record count */
    if (s.columns && (s.col_pos[0] != s.col_blob_len[0] || s.col_pos[1] != s.col_blob_len[1]))
        return PL_E_INVAL; /* stream/blob do not match the record count */
    *size_out = (size_t)total;
    *max_ts = mx;
    return 0;
}

static inline uint8_t *put_bytes(uint8_t *o, const span_t *sp)
{
    o = uvar_put(o, zz32((int32_t)sp->len));
    if (sp->len > 0) {
        memcpy(o, sp->p, (size_t)sp->len);
        o += sp->len;
    }
    return o;
}

/* Write pass: the source was validated by records_size(). */
static uint8_t *records_write(src_t s, uint32_t n, int64_t base_ts, uint8_t *o)
{
    for (uint32_t i = 0; i < n; i++) {
        int64_t ts;
        span_t k, v;
        int32_t hc;
        src_t save;
        src_record(&s, &ts, &k, &v, &hc);
        /* compute the body size (needs the headers; walk them on a copy) */
        save = s;
        uint64_t body = 1 + uvar_size(zz64(ts - base_ts)) + uvar_size(zz32((int32_t)i));
        body += uvar_size(zz32((int32_t)k.len)) + (k.len > 0 ? (uint64_t)k.len : 0);
        body += uvar_size(zz32((int32_t)v.len)) + (v.len > 0 ? (uint64_t)v.len : 0);
        body += uvar_size(zz32(hc));
        for (int32_t j = 0; j < hc; j++) {
            span_t hk, hv;
            src_header(&save, &hk, &hv);
            body += uvar_size(zz32((int32_t)hk.len)) + (uint64_t)hk.len;
            body += uvar_size(zz32((int32_t)hv.len)) + (hv.len > 0 ? (uint64_t)hv.len : 0);
        }
        o = uvar_put(o, zz32((int32_t)body));
        *o++ = 0; /* record attributes */
        o = uvar_put(o, zz64(ts - base_ts));
        o = uvar_put(o, zz32((int32_t)i));
        o = put_bytes(o, &k);
        o = put_bytes(o, &v);
        o = uvar_put(o, zz32(hc));
        for (int32_t j = 0; j < hc; j++) {
            span_t hk, hv;
            src_header(&s, &hk, &hv);
            o = put_bytes(o, &hk);
            o = put_bytes(o, &hv);
        }
    }
    return o;
}

static void write_header(uint8_t *out, const pl_batch_meta *m, size_t total)
{
    wr64(out + PL_OFF_BASE_OFFSET, (uint64_t)m->base_offset);
    wr32(out + PL_OFF_BATCH_LENGTH, (uint32_t)(total - PL_LOG_OVERHEAD));
    wr32(out + PL_OFF_PARTITION_LEADER_EPOCH, (uint32_t)m->partition_leader_epoch);
    out[PL_OFF_MAGIC] = PL_MAGIC_V2; /* B-3 */
    wr32(out + PL_OFF_CRC, 0);
    wr16(out + PL_OFF_ATTRIBUTES, (uint16_t)m->attributes);
    wr32(out + PL_OFF_LAST_OFFSET_DELTA, (uint32_t)m->last_offset_delta);
    wr64(out + PL_OFF_BASE_TIMESTAMP, (uint64_t)m->base_timestamp);
    wr64(out + PL_OFF_MAX_TIMESTAMP, (uint64_t)m->max_timestamp);
    wr64(out + PL_OFF_PRODUCER_ID, (uint64_t)m->producer_id);
    wr16(out + PL_OFF_PRODUCER_EPOCH, (uint16_t)m->producer_epoch);
    wr32(out + PL_OFF_BASE_SEQUENCE, (uint32_t)m->base_sequence);
    wr32(out + PL_OFF_RECORDS_COUNT, (uint32_t)m->records_count);
    /* B-4: CRC over attributes..end, computed last */
    wr32(out + PL_OFF_CRC, pl_crc32c(0, out + PL_OFF_ATTRIBUTES, total - PL_OFF_ATTRIBUTES));
}

static int first_timestamp(const src_t *s, int64_t *ts)
{
    if (s->columns) {
        *ts = s->timestamps ? s->timestamps[0] : s->col_ts;
    } else if (s->packed) {
        if (s->stream_len < 4)
            return PL_E_INVAL;
        *ts = s->stream[0];
    } else {
        if (!s->timestamps)
            return PL_E_INVAL;
        *ts = s->timestamps[0];
    }
    return 0;
}


int pli_batch_plan(const pl_batch_meta *meta, uint32_t n, src_t *s, pli_batch_plan_t *p)
{
    int rc;
    if (!meta || n == 0)
        return PL_E_INVAL;
    if ((meta->attributes & PL_ATTR_CODEC_MASK) != 0)
        return PL_E_INVAL; /* uncompressed encoder */
    if ((rc = first_timestamp(s, &p->base_ts)))
        return rc;
    if ((rc = records_size(*s, n, p->base_ts, &p->rsize, &p->max_ts)))
        return rc;
    p->total = PL_BATCH_HEADER_SIZE + p->rsize;
    if (p->total - PL_LOG_OVERHEAD > (size_t)INT32_MAX)
        return PL_E_INVAL;
    return 0;
}

/* Write a planned batch to out (p->total bytes). */
void pli_batch_write(uint8_t *out, const pl_batch_meta *meta, uint32_t n, src_t *s,
                        const pli_batch_plan_t *p)
{
    records_write(*s, n, p->base_ts, out + PL_BATCH_HEADER_SIZE);
    pl_batch_meta m = *meta;
    m.last_offset_delta = (int32_t)(n - 1);
    m.base_timestamp = p->base_ts;
    m.max_timestamp = p->max_ts;
    m.records_count = (int32_t)n;
    write_header(out, &m, p->total);
}

static int batch_encode(uint8_t *out, size_t cap, size_t *written, const pl_batch_meta *meta,
                        uint32_t n, src_t *s)
{
    pli_batch_plan_t p;
    if (!written)
        return PL_E_INVAL;
    int rc = pli_batch_plan(meta, n, s, &p);
    if (rc)
        return rc;
    *written = p.total;
    if (!out || p.total > cap)
        return PL_E_NOSPACE;
    pli_batch_write(out, meta, n, s, &p);
    return 0;
}

static int records_encode(uint8_t *out, size_t cap, size_t *written, int64_t base_ts,
                          int64_t *max_ts_out, uint32_t n, src_t *s)
{
    size_t rsize;
    int64_t max_ts;
    int rc;
    if (!written)
        return PL_E_INVAL;
    if ((rc = records_size(*s, n, base_ts, &rsize, &max_ts)))
        return rc;
    *written = rsize;
    if (max_ts_out)
        *max_ts_out = max_ts;
    if (!out || rsize > cap)
        return PL_E_NOSPACE;
    records_write(*s, n, base_ts, out);
    return 0;
}

#define ARRAY_SRC(s)                                                                      \
    src_t s;                                                                              \
    memset(&s, 0, sizeof s);                                                              \
    s.timestamps = timestamps; s.keys = keys; s.key_lens = key_lens; s.values = values;   \
    s.value_lens = value_lens; s.header_counts = header_counts; s.hkeys = hkeys;          \
    s.hkey_lens = hkey_lens; s.hvals = hvals; s.hval_lens = hval_lens

int pl_batch_encode(uint8_t *out, size_t cap, size_t *written, const pl_batch_meta *meta,
                    uint32_t n, const int64_t *timestamps,
                    const uint8_t *const *keys, const int64_t *key_lens,
                    const uint8_t *const *values, const int64_t *value_lens,
                    const int32_t *header_counts,
                    const uint8_t *const *hkeys, const int64_t *hkey_lens,
                    const uint8_t *const *hvals, const int64_t *hval_lens)
{
    ARRAY_SRC(s);
    return batch_encode(out, cap, written, meta, n, &s);
}

int pl_batch_encode_packed(uint8_t *out, size_t cap, size_t *written, const pl_batch_meta *meta,
                           uint32_t n, const int64_t *stream, size_t stream_len,
                           const uint8_t *blob, size_t blob_len)
{
    PACKED_SRC(s);
    return batch_encode(out, cap, written, meta, n, &s);
}

int pl_records_encode(uint8_t *out, size_t cap, size_t *written, int64_t base_timestamp,
                      int64_t *max_ts_out, uint32_t n, const int64_t *timestamps,
                      const uint8_t *const *keys, const int64_t *key_lens,
                      const uint8_t *const *values, const int64_t *value_lens,
                      const int32_t *header_counts,
                      const uint8_t *const *hkeys, const int64_t *hkey_lens,
                      const uint8_t *const *hvals, const int64_t *hval_lens)
{
    ARRAY_SRC(s);
    return records_encode(out, cap, written, base_timestamp, max_ts_out, n, &s);
}

int pl_records_encode_packed(uint8_t *out, size_t cap, size_t *written, int64_t base_timestamp,
                             int64_t *max_ts_out, uint32_t n, const int64_t *stream,
                             size_t stream_len, const uint8_t *blob, size_t blob_len)
{
    PACKED_SRC(s);
    return records_encode(out, cap, written, base_timestamp, max_ts_out, n, &s);
}

int pl_batch_wrap(uint8_t *out, size_t cap, size_t *written, const pl_batch_meta *meta,
                  const uint8_t *records, size_t records_len)
{
    if (!written || !meta || (!records && records_len))
        return PL_E_INVAL;
    if (meta->records_count < 0 || meta->last_offset_delta < 0)
        return PL_E_INVAL;
    if (records_len > (size_t)INT32_MAX - PL_BATCH_LENGTH_MIN)
        return PL_E_INVAL;
    size_t total = PL_BATCH_HEADER_SIZE + records_len;
    *written = total;
    if (!out || total > cap)
        return PL_E_NOSPACE;
    if (records_len)
        memmove(out + PL_BATCH_HEADER_SIZE, records, records_len);
    write_header(out, meta, total);
    return 0;
}
