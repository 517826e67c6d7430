/* pylog native core; see pylog_native.h for the contract of each function. */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE
#endif

#include "pylog_native.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sched.h>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PL_X86_HW 1
#include <nmmintrin.h>
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define PL_ARM_HW 1
#include <arm_acle.h>
#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
#endif
#endif

/* ------------------------------------------------------------------ */
/* reasons                                                             */
/* ------------------------------------------------------------------ */

static const char *const reason_strs[PL_C_MAX + 1] = {
    "ok",
    "batch header truncated: fewer than 12 bytes left (B-2)",
    "batchLength below the 49-byte minimum (B-2)",
    "batch extends past the end of the buffer (B-2)",
    "magic byte is not 2 (B-3)",
    "CRC32C mismatch (B-4)",
    "baseOffset is not the expected next offset",
    "batch offsets outside the segment's int32 relative range",
    "varint unterminated or longer than 5/10 bytes (R-1)",
    "length field below -1 or beyond the end of the record (R-2)",
    "parsed record size differs from its length field (R-3)",
    "records do not end exactly at the end of the records section (R-4)",
    "number of records differs from recordsCount (R-5)",
    "offsetDelta not strictly increasing within [0, lastOffsetDelta] (R-6)",
    "negative headersCount (R-7)",
    "negative lastOffsetDelta or recordsCount",
    "batch position does not fit in an int32 index entry",
};

const char *pl_reason_str(int code)
{
    if (code >= 0 && code <= PL_C_MAX)
        return reason_strs[code];
    switch (code) {
    case PL_E_NOSPACE: return "output buffer too small";
    case PL_E_INVAL: return "invalid argument";
    case PL_E_BUSY: return "state busy (writer died mid-publish?)";
    default: return "unknown error";
    }
}

/* ------------------------------------------------------------------ */
/* big-endian helpers                                                  */
/* ------------------------------------------------------------------ */

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t rd32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t rd64(const uint8_t *p) { return ((uint64_t)rd32(p) << 32) | rd32(p + 4); }
static inline void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline void wr64(uint8_t *p, uint64_t v) { wr32(p, (uint32_t)(v >> 32)); wr32(p + 4, (uint32_t)v); }

/* ------------------------------------------------------------------ */
/* CRC32C                                                              */
/* ------------------------------------------------------------------ */

#define CRC32C_POLY 0x82F63B78u
static uint32_t crc_tab[8][256];
static volatile int crc_tab_ready = 0;
typedef uint32_t (*crc_fn)(uint32_t, const uint8_t *, size_t);
static crc_fn crc_impl = 0;

static void crc_tab_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
        crc_tab[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_tab[t][i] = (crc_tab[t - 1][i] >> 8) ^ crc_tab[0][crc_tab[t - 1][i] & 0xff];
    crc_tab_ready = 1;
}

uint32_t pl_crc32c_portable(uint32_t crc, const uint8_t *p, size_t n)
{
    if (!crc_tab_ready)
        crc_tab_init(); /* normally done by the constructor */
    uint32_t c = ~crc;
    while (n && ((uintptr_t)p & 7)) {
        c = crc_tab[0][(c ^ *p++) & 0xff] ^ (c >> 8);
        n--;
    }
    while (n >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
                           ((uint32_t)p[3] << 24));
        uint32_t hi = (uint32_t)p[4] | ((uint32_t)p[5] << 8) | ((uint32_t)p[6] << 16) |
                      ((uint32_t)p[7] << 24);
        c = crc_tab[7][lo & 0xff] ^ crc_tab[6][(lo >> 8) & 0xff] ^ crc_tab[5][(lo >> 16) & 0xff] ^
            crc_tab[4][lo >> 24] ^ crc_tab[3][hi & 0xff] ^ crc_tab[2][(hi >> 8) & 0xff] ^
            crc_tab[1][(hi >> 16) & 0xff] ^ crc_tab[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = crc_tab[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return ~c;
}

#if defined(PL_X86_HW)
__attribute__((target("sse4.2")))
uint32_t pl_crc32c_hw(uint32_t crc, const uint8_t *p, size_t n)
{
    uint64_t c = (uint32_t)~crc;
    while (n && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        n--;
    }
    while (n >= 32) {
        uint64_t w0, w1, w2, w3;
        memcpy(&w0, p, 8); memcpy(&w1, p + 8, 8); memcpy(&w2, p + 16, 8); memcpy(&w3, p + 24, 8);
        c = _mm_crc32_u64(c, w0); c = _mm_crc32_u64(c, w1);
        c = _mm_crc32_u64(c, w2); c = _mm_crc32_u64(c, w3);
        p += 32;
        n -= 32;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        n -= 8;
    }
    while (n--)
        c = _mm_crc32_u8((uint32_t)c, *p++);
    return ~(uint32_t)c;
}

int pl_crc32c_hw_available(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") ? 1 : 0;
}
#elif defined(PL_ARM_HW)
__attribute__((target("+crc")))
uint32_t pl_crc32c_hw(uint32_t crc, const uint8_t *p, size_t n)
{
    uint32_t c = ~crc;
    while (n && ((uintptr_t)p & 7)) {
        c = __crc32cb(c, *p++);
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __crc32cd(c, w);
        p += 8;
        n -= 8;
    }
    while (n--)
        c = __crc32cb(c, *p++);
    return ~c;
}

int pl_crc32c_hw_available(void)
{
#if defined(__ARM_FEATURE_CRC32)
    return 1;
#elif defined(__linux__)
    return (getauxval(AT_HWCAP) & HWCAP_CRC32) ? 1 : 0;
#else
    return 0;
#endif
}
#else
uint32_t pl_crc32c_hw(uint32_t crc, const uint8_t *p, size_t n)
{
    return pl_crc32c_portable(crc, p, n);
}
int pl_crc32c_hw_available(void) { return 0; }
#endif

#if defined(__GNUC__) || defined(__clang__)
__attribute__((constructor))
#endif
static void pl_init(void)
{
    crc_tab_init();
    crc_impl = pl_crc32c_hw_available() ? pl_crc32c_hw : pl_crc32c_portable;
}

uint32_t pl_crc32c(uint32_t crc, const uint8_t *p, size_t n)
{
    crc_fn f = crc_impl;
    if (!f) {
        pl_init();
        f = crc_impl;
    }
    return f(crc, p, n);
}

/* ------------------------------------------------------------------ */
/* murmur2 (Kafka Utils.murmur2)                                       */
/* ------------------------------------------------------------------ */

int32_t pl_murmur2(const uint8_t *p, size_t n)
{
    const uint32_t m = 0x5bd1e995u;
    const int r = 24;
    uint32_t h = 0x9747b28cu ^ (uint32_t)n;
    size_t n4 = n / 4;
    for (size_t i = 0; i < n4; i++) {
        const uint8_t *q = p + 4 * i;
        uint32_t k = (uint32_t)q[0] | ((uint32_t)q[1] << 8) | ((uint32_t)q[2] << 16) |
                     ((uint32_t)q[3] << 24);
        k *= m;
        k ^= k >> r;
        k *= m;
        h *= m;
        h ^= k;
    }
    size_t t = n & ~(size_t)3;
    switch (n & 3) {
    case 3:
        h ^= (uint32_t)p[t + 2] << 16;
        /* fallthrough */
    case 2:
        h ^= (uint32_t)p[t + 1] << 8;
        /* fallthrough */
    case 1:
        h ^= (uint32_t)p[t];
        h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return (int32_t)h;
}

/* ------------------------------------------------------------------ */
/* varints (zigzag)                                                    */
/* ------------------------------------------------------------------ */

int pl_partition_many(const uint8_t *blob, size_t blob_len, const int64_t *lens, size_t count,
                      int32_t num_partitions, int32_t *out)
{
    if (num_partitions <= 0 || (!blob && blob_len) || (!lens && count) || (!out && count))
        return PL_E_INVAL;
    size_t off = 0;
    for (size_t i = 0; i < count; i++) {
        if (lens[i] < 0 || (uint64_t)lens[i] > blob_len - off)
            return PL_E_INVAL;
        int32_t h = pl_murmur2(blob + off, (size_t)lens[i]);
        out[i] = (int32_t)(((uint32_t)h & 0x7fffffffu) % (uint32_t)num_partitions);
        off += (size_t)lens[i];
    }
    return off == blob_len ? 0 : PL_E_INVAL;
}

static inline uint32_t zz32(int32_t v) { return ((uint32_t)v << 1) ^ (uint32_t)(v >> 31); }
static inline uint64_t zz64(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }

static inline size_t uvar_size(uint64_t u)
{
    size_t s = 1;
    while (u >= 0x80) {
        u >>= 7;
        s++;
    }
    return s;
}

static inline uint8_t *uvar_put(uint8_t *p, uint64_t u)
{
    while (u >= 0x80) {
        *p++ = (uint8_t)(u | 0x80);
        u >>= 7;
    }
    *p++ = (uint8_t)u;
    return p;
}

/* varint must terminate before end and within 5 bytes (int32). */
static inline int get_varint(const uint8_t **pp, const uint8_t *end, int32_t *out)
{
    const uint8_t *p = *pp;
    uint32_t u = 0;
    for (int i = 0; i < 5; i++) {
        if (p >= end)
            return PL_C_VARINT; /* */
        uint8_t b = *p++;
        if (i == 4 && (b & 0xf0))
            return PL_C_VARINT; /* continuation or bits beyond 32 */
        u |= (uint32_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *pp = p;
            *out = (int32_t)((u >> 1) ^ (~(u & 1) + 1));
            return 0;
        }
    }
    return PL_C_VARINT; /* */
}

/* varlong must terminate before end and within 10 bytes (int64). */
static inline int get_varlong(const uint8_t **pp, const uint8_t *end, int64_t *out)
{
    const uint8_t *p = *pp;
    uint64_t u = 0;
    for (int i = 0; i < 10; i++) {
        if (p >= end)
            return PL_C_VARINT; /* */
        uint8_t b = *p++;
        if (i == 9 && (b & 0xfe))
            return PL_C_VARINT; /* */
        u |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *pp = p;
            *out = (int64_t)((u >> 1) ^ (~(u & 1) + 1));
            return 0;
        }
    }
    return PL_C_VARINT; /* */
}

/* ------------------------------------------------------------------ */
/* record sources for the encoders                                     */
/* ------------------------------------------------------------------ */

typedef struct {
    int packed;  /* keys and values come from blob (packed and columns forms) */
    int columns; /* columns form: one timestamp, a key blob and a value blob   */
    int64_t col_ts;
    uint32_t col_n;
    const int32_t *col_lens[2];  /* per record key / value lengths, or NULL:  */
    int64_t col_len[2];          /*   every one is col_len (-1: null)         */
    const uint8_t *col_blob[2];
    size_t col_blob_len[2], col_pos[2];
    /* pointer arrays */
    const int64_t *timestamps;
    const uint8_t *const *keys;
    const int64_t *key_lens;
    const uint8_t *const *values;
    const int64_t *value_lens;
    const int32_t *header_counts;
    const uint8_t *const *hkeys;
    const int64_t *hkey_lens;
    const uint8_t *const *hvals;
    const int64_t *hval_lens;
    /* packed */
    const int64_t *stream;
    size_t stream_len;
    const uint8_t *blob;
    size_t blob_len;
    /* cursor */
    size_t rec, hdr, spos, bpos;
} src_t;

typedef struct {
    const uint8_t *p;
    int64_t len;
} span_t;

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
        *ts = s->col_ts;
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
    wr64(out + 0, (uint64_t)m->base_offset);
    wr32(out + 8, (uint32_t)(total - 12));
    wr32(out + 12, (uint32_t)m->partition_leader_epoch);
    out[16] = 2; /* B-3 */
    wr32(out + 17, 0);
    wr16(out + 21, (uint16_t)m->attributes);
    wr32(out + 23, (uint32_t)m->last_offset_delta);
    wr64(out + 27, (uint64_t)m->base_timestamp);
    wr64(out + 35, (uint64_t)m->max_timestamp);
    wr64(out + 43, (uint64_t)m->producer_id);
    wr16(out + 51, (uint16_t)m->producer_epoch);
    wr32(out + 53, (uint32_t)m->base_sequence);
    wr32(out + 57, (uint32_t)m->records_count);
    /* B-4: CRC over attributes..end, computed last */
    wr32(out + 17, pl_crc32c(0, out + 21, total - 21));
}

static int first_timestamp(const src_t *s, int64_t *ts)
{
    if (s->columns) {
        *ts = s->col_ts;
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

/* What encoding n records of a source takes: sized first, so a caller can
 * choose where the batch goes before anything is written. */
typedef struct {
    int64_t base_ts, max_ts;
    size_t rsize;  /* records section */
    size_t total;  /* whole batch     */
} batch_plan;

static int batch_plan_for(const pl_batch_meta *meta, uint32_t n, src_t *s, batch_plan *p)
{
    int rc;
    if (!meta || n == 0)
        return PL_E_INVAL;
    if ((meta->attributes & 0x07) != 0)
        return PL_E_INVAL; /* uncompressed encoder */
    if ((rc = first_timestamp(s, &p->base_ts)))
        return rc;
    if ((rc = records_size(*s, n, p->base_ts, &p->rsize, &p->max_ts)))
        return rc;
    p->total = PL_BATCH_HEADER_SIZE + p->rsize;
    if (p->total - 12 > (size_t)INT32_MAX)
        return PL_E_INVAL;
    return 0;
}

/* Write a planned batch to out (p->total bytes). */
static void batch_write(uint8_t *out, const pl_batch_meta *meta, uint32_t n, src_t *s,
                        const batch_plan *p)
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
    batch_plan p;
    if (!written)
        return PL_E_INVAL;
    int rc = batch_plan_for(meta, n, s, &p);
    if (rc)
        return rc;
    *written = p.total;
    if (!out || p.total > cap)
        return PL_E_NOSPACE;
    batch_write(out, meta, n, s, &p);
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

#define PACKED_SRC(s)                                                                     \
    src_t s;                                                                              \
    memset(&s, 0, sizeof s);                                                              \
    s.packed = 1; s.stream = stream; s.stream_len = stream_len; s.blob = blob;            \
    s.blob_len = blob_len;                                                                \
    if (!stream && stream_len) return PL_E_INVAL;                                         \
    if (!blob && blob_len) return PL_E_INVAL

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
    if (records_len > (size_t)INT32_MAX - (PL_BATCH_HEADER_SIZE - 12))
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

/* ------------------------------------------------------------------ */
/* header parsing                                                      */
/* ------------------------------------------------------------------ */

static int parse_header(const uint8_t *buf, size_t len, size_t pos, pl_batch_header_out *o,
                        int check_crc)
{
    memset(o, 0, sizeof *o);
    if (!buf || pos > len || len - pos < 12)
        return PL_C_TRUNCATED_HEADER;
    const uint8_t *b = buf + pos;
    o->base_offset = (int64_t)rd64(b);
    o->batch_length = (int32_t)rd32(b + 8);
    if (o->batch_length < PL_BATCH_HEADER_SIZE - 12)
        return PL_C_BATCH_LENGTH; /* B-2 */
    if ((uint64_t)o->batch_length + 12 > (uint64_t)(len - pos))
        return PL_C_BATCH_TRUNCATED; /* B-2 */
    o->partition_leader_epoch = (int32_t)rd32(b + 12);
    o->magic = (int8_t)b[16];
    o->crc = rd32(b + 17);
    o->attributes = (int16_t)rd16(b + 21);
    o->last_offset_delta = (int32_t)rd32(b + 23);
    o->base_timestamp = (int64_t)rd64(b + 27);
    o->max_timestamp = (int64_t)rd64(b + 35);
    o->producer_id = (int64_t)rd64(b + 43);
    o->producer_epoch = (int16_t)rd16(b + 51);
    o->base_sequence = (int32_t)rd32(b + 53);
    o->records_count = (int32_t)rd32(b + 57);
    if (o->magic != 2)
        return PL_C_MAGIC; /* B-3 */
    if (check_crc) /* B-4 */
        o->crc_valid = pl_crc32c(0, b + 21, (size_t)o->batch_length + 12 - 21) == o->crc;
    return 0;
}

int pl_batch_header(const uint8_t *buf, size_t len, size_t pos, pl_batch_header_out *out)
{
    if (!out)
        return PL_E_INVAL;
    return parse_header(buf, len, pos, out, 1);
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
        if ((rc = parse_header(seg, end, pos, &h, 1)) == 0 && !h.crc_valid)
            rc = PL_C_CRC; /* B-4 */
        if (rc == 0 && (h.records_count < 0 || h.last_offset_delta < 0))
            rc = PL_C_LAST_OFFSET_DELTA;
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

/* ------------------------------------------------------------------ */
/* segment scan                                                        */
/* ------------------------------------------------------------------ */

/* Checks a batch fully (framing, magic, CRC, offset range). */
static int batch_ok(const uint8_t *buf, size_t len, size_t pos, int64_t expected,
                    int64_t seg_base, pl_batch_header_out *h, int64_t *last)
{
    int rc = parse_header(buf, len, pos, h, 1);
    if (rc)
        return rc;
    if (!h->crc_valid)
        return PL_C_CRC; /* B-4 */
    if (h->last_offset_delta < 0 || h->records_count < 0)
        return PL_C_LAST_OFFSET_DELTA;
    if (expected >= 0 && h->base_offset != expected)
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
            break; /* zero batchLength: preallocated zero-filled tail, normal end */
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

/* ------------------------------------------------------------------ */
/* partition state seqlock                                             */
/* ------------------------------------------------------------------ */

typedef struct {
    uint32_t magic;
    uint32_t version;
    uint64_t seq;
    int64_t vals[6];
} pl_state_t;

_Static_assert(sizeof(pl_state_t) == PL_STATE_SIZE, "state layout");

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

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

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t mono_us(void)
{
    return mono_ns() / 1000;
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

int pl_wait_fetch(void *slot, uint32_t *waiting, uint32_t expected, int64_t timeout_us,
                  const void *state, int64_t seg_base, const uint8_t *seg, size_t seg_len, size_t pos,
                  int64_t next, int64_t first_base, uint32_t max_records,
                  uint32_t soft_records, int64_t *fields, size_t fields_cap, int64_t *hdrs,
                  size_t hdr_cap, pl_fetch_out *out)
{
    if (!state || !seg || !out)
        return PL_E_INVAL;
    if (waiting)
        __atomic_fetch_add(waiting, 1, __ATOMIC_SEQ_CST);
    int rc = pl_doorbell_wait(slot, expected, timeout_us);
    if (waiting)
        __atomic_fetch_sub(waiting, 1, __ATOMIC_SEQ_CST);
    if (rc != 0)
        return rc;
    /* Woken: decode what was published, here and now, while the GIL may
     * still be busy with the thread that rang (the decode needs none). */
    int64_t vals[6];
    if (pl_state_read(state, vals, NULL) != 0)
        return PL_WAIT_WOKEN;            /* the caller's state() repairs */
    int64_t next_offset = vals[0], active_base = vals[1], end = vals[2];
    int64_t log_start = vals[5];
    if (active_base != seg_base || end <= (int64_t)pos || (uint64_t)end > seg_len ||
        next_offset <= next || log_start > next)
        return PL_WAIT_WOKEN;            /* rolled, grown past the map, nothing new */
    rc = pl_fetch(seg, (size_t)end, pos, next, first_base, max_records, soft_records,
                  fields, fields_cap, hdrs, hdr_cap, out);
    return rc != 0 ? rc : PL_WAIT_FETCHED;
}

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
    m.base_offset = next;
    batch_plan plan;
    int rc = batch_plan_for(&m, n, src, &plan);
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
        batch_write(a->scratch, &m, n, src, &plan);
        size_t done = 0;
        while (done < written) {
            ssize_t w = pwrite(a->seg_fd, a->scratch + done, written - done,
                               (off_t)(pos + (int64_t)done));
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                int e = w < 0 ? errno : EIO;
                return e == EPERM ? -EACCES : -e; /* -EPERM is PL_E_NOSPACE */
            }
            done += (size_t)w;
        }
    } else {
        batch_write(seg + pos, &m, n, src, &plan);
    }
    int64_t batch_max = plan.max_ts;
    int64_t last = next + (int64_t)n - 1;
    if (batch_max > maxts)
        maxts = batch_max;
    int64_t nv[6] = {last + 1, base, pos + (int64_t)written, maxts, v[4], v[5]};
    pl_state_publish(state, nv); /* P-2: visible now, whole */
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

/* ---- append lock ---- */

#if defined(__linux__) && defined(F_OFD_GETLK)
#define PL_FUTEX_LOCK 1
#endif

int pl_liveness_lock(int live_fd, uint32_t token)
{
    if (token == 0 || token > 0x7fffffffu)
        return PL_E_INVAL;
    return pl_lock(live_fd, PL_LIVENESS_BASE + (int64_t)token, 1, 1, 0);
}

#ifdef PL_FUTEX_LOCK
/* Is the Log owning ``token`` alive?  It is while some open file description
 * holds a read lock on its liveness byte; ours never conflicts with itself. */
static int token_alive(int live_fd, uint32_t token)
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

int pl_plock_acquire(void *state, uint32_t token, int live_fd, int state_fd, int wait)
{
    if (!state || ((uintptr_t)state & 7) || token == 0)
        return PL_E_INVAL;
#ifdef PL_FUTEX_LOCK
    (void)state_fd;
    uint32_t *w = (uint32_t *)((uint8_t *)state + PL_STATE_LOCK_WORD);
    uint32_t *waiters = w + 1;
    for (long round = 0;; round++) {
        uint32_t cur = 0;
        if (__atomic_compare_exchange_n(w, &cur, token, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return 0;
        if (cur == token)
            return PL_E_INVAL; /* this Log holds it already: a caller bug */
        if (!wait || round > 0) {
            if (!token_alive(live_fd, cur)) {
                /* P-3: the holder died; its half-done work is past the
                 * published end and is overwritten or recovered. */
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
    uint32_t *w = (uint32_t *)((uint8_t *)state + PL_STATE_LOCK_WORD);
    uint32_t expect = token;
    if (!__atomic_compare_exchange_n(w, &expect, 0, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
        return PL_E_INVAL; /* not ours (taken over after we were thought dead) */
    if (__atomic_load_n(w + 1, __ATOMIC_SEQ_CST) != 0)
        syscall(SYS_futex, w, FUTEX_WAKE, 1, NULL, NULL, 0);
    return 0;
#else
    return pl_lock(state_fd, 0, 1, 0, 0);
#endif
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
    int64_t t0 = mono_ns(), prev = a->last_ring_ns;
    a->last_ring_ns = t0;
    if (!w || a->hold_max_ns <= 0 || t0 - prev < a->hold_gap_ns)
        return;
    for (long i = 1; __atomic_load_n(&a->handoff[0], __ATOMIC_SEQ_CST) == h0; i++) {
        if ((i & 63) == 0) {
            if (mono_ns() - t0 > a->hold_max_ns)
                break;
            sched_yield();
        } else {
            cpu_relax();
        }
    }
    a->last_ring_ns = mono_ns();     /* the next append's gap counts from here */
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

int pl_append_columns(pl_appender *a, uint32_t n, int64_t timestamp,
                      const int32_t *key_lens, int64_t key_len, const uint8_t *keys,
                      size_t keys_len, const int32_t *value_lens, int64_t value_len,
                      const uint8_t *values, size_t values_len)
{
    src_t s;
    memset(&s, 0, sizeof s);
    if ((!keys && keys_len) || (!values && values_len))
        return PL_E_INVAL;
    s.columns = 1; s.col_ts = timestamp; s.col_n = n;
    s.col_lens[0] = key_lens; s.col_len[0] = key_len;
    s.col_blob[0] = keys; s.col_blob_len[0] = keys_len;
    s.col_lens[1] = value_lens; s.col_len[1] = value_len;
    s.col_blob[1] = values; s.col_blob_len[1] = values_len;
    return append_src(a, n, &s, 1);
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

/* ------------------------------------------------------------------ */
/* group commit                                                        */
/* ------------------------------------------------------------------ */

/* A caller waiting for its target: woken only when the target is durable
 * or when it must lead the next sync (no thundering herd: each woken thread
 * wants the GIL next). */
typedef struct sync_waiter {
    struct sync_waiter *next;
    int64_t target;
    int woken;
    pthread_cond_t cv;
} sync_waiter;

struct pl_syncer {
    pthread_mutex_t mu;
    int fd;               /* our dup of the active segment, -1: none     */
    char *path;           /* its path (L-6 identity check), NULL: none    */
    int syncing;          /* a leader is in fdatasync                     */
    int error;            /* sticky -errno of a failed fdatasync          */
    int64_t synced_next;  /* offsets below this are durable               */
    int64_t checked_ns;   /* CLOCK_MONOTONIC of the last L-6 check         */
    sync_waiter *head;    /* waiters, oldest first                        */
    sync_waiter *tail;
};

pl_syncer *pl_syncer_new(void)
{
    pl_syncer *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    pthread_mutex_init(&s->mu, NULL);
    s->fd = -1;
    return s;
}

void pl_syncer_free(pl_syncer *s)
{
    if (!s)
        return;
    if (s->fd >= 0)
        close(s->fd);
    free(s->path);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* Under s->mu: wake every waiter whose target is durable (or all, after an
 * error or a change of segment), and, if others still wait and nobody
 * leads, the oldest of them to lead. */
static void wake_waiters(pl_syncer *s, int all)
{
    sync_waiter **pp = &s->head, *last = NULL;
    while (*pp) {
        sync_waiter *w = *pp;
        if (all || s->error || w->target <= s->synced_next) {
            *pp = w->next;
            w->woken = 1;
            pthread_cond_signal(&w->cv);
        } else {
            last = w;
            pp = &w->next;
        }
    }
    s->tail = last;
    if (!s->syncing && s->head) {
        sync_waiter *w = s->head;
        s->head = w->next;
        if (!s->head)
            s->tail = NULL;
        w->woken = 1;
        pthread_cond_signal(&w->cv);
    }
}

int pl_syncer_set_fd(pl_syncer *s, int fd, int64_t durable_next, const char *path)
{
    if (!s)
        return PL_E_INVAL;
    char *copy = NULL;
    if (fd >= 0 && path && !(copy = strdup(path)))
        return -ENOMEM;
    int dup_fd = -1;
    if (fd >= 0 && (dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0) {
        int e = errno;
        free(copy);
        return -e;
    }
    pthread_mutex_lock(&s->mu);
    /* a leader syncing the old fd synced its own dup: closing ours is safe */
    if (s->fd >= 0)
        close(s->fd);
    s->fd = dup_fd;
    /* fd and path change together: a leader never checks one against the
     * other's identity (it copies both under the mutex) */
    free(s->path);
    s->path = copy;
    if (durable_next > s->synced_next)
        s->synced_next = durable_next;
    wake_waiters(s, dup_fd < 0);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* L-6: is the file behind `fd` gone from the namespace (unlinked: rm -rf
 * of its directory), or does `path` (when not empty) now name another file
 * (the directory moved or replaced)?  Checked after a group's fdatasync,
 * at most every PL_IDENTITY_CHECK_NS, so appends pay nothing for it.  An
 * error other than "not there" proves nothing. */
#define PL_IDENTITY_CHECK_NS 5000000      /* 5 ms */

static int file_vanished(int fd, const char *path)
{
    struct stat held, now;
    if (fstat(fd, &held) != 0)
        return 0;
    if (held.st_nlink == 0)
        return 1;
    if (!path[0])
        return 0;
    if (stat(path, &now) != 0)
        return errno == ENOENT || errno == ENOTDIR;
    return now.st_dev != held.st_dev || now.st_ino != held.st_ino;
}

int pl_sync_through(pl_syncer *s, const pl_appender *a, int64_t target_next)
{
    if (!s || !a)
        return PL_E_INVAL;
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (s->error) {
            rc = s->error;
            break;
        }
        if (s->synced_next >= target_next)
            break;
        if (s->fd < 0) {
            rc = PL_E_STALE; /* no active segment: the partition was closed */
            break;
        }
        if (s->syncing) {
            sync_waiter w;
            w.next = NULL;
            w.target = target_next;
            w.woken = 0;
            pthread_cond_init(&w.cv, NULL);
            if (s->tail)
                s->tail->next = &w;
            else
                s->head = &w;
            s->tail = &w;
            while (!w.woken)
                pthread_cond_wait(&w.cv, &s->mu);
            pthread_cond_destroy(&w.cv);
            continue;
        }
        /* lead one sync: it covers what was published before it starts */
        s->syncing = 1;
        int64_t upto = __atomic_load_n(&a->written_next, __ATOMIC_ACQUIRE);
        int fd = fcntl(s->fd, F_DUPFD_CLOEXEC, 0);
        int err = fd < 0 ? errno : 0;
        char path[4096];
        path[0] = 0;
        if (s->path && strlen(s->path) < sizeof path)
            strcpy(path, s->path);
        /* L-6 at most every PL_IDENTITY_CHECK_NS: a check after every
         * fdatasync measured 25% of durable sends, one per 5 ms nothing */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t now_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
        int check = now_ns - s->checked_ns >= PL_IDENTITY_CHECK_NS;
        if (check)
            s->checked_ns = now_ns;
        pthread_mutex_unlock(&s->mu);
        int vanished = 0;
        if (!err) {
            if (fdatasync(fd) != 0)
                err = errno ? errno : EIO;
            else if (check)
                vanished = file_vanished(fd, path);
            close(fd);
        }
        pthread_mutex_lock(&s->mu);
        s->syncing = 0;
        if (fd < 0) {
            /* no descriptor for the sync (EMFILE...): this caller fails,
             * the data is unharmed and the next leader tries again */
            wake_waiters(s, 0);
            rc = -err;
            break;
        }
        if (err)
            s->error = -err;
        else if (vanished)
            s->error = PL_E_VANISHED;
        else if (upto > s->synced_next)
            s->synced_next = upto;
        wake_waiters(s, 0);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}
