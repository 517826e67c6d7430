/* Internal header of the pylog native core: what the csrc/ source files share
 * (system headers, byte-order and varint helpers, the encoders' record
 * sources, the state layout). Not part of the cffi interface. */
#ifndef PYLOG_INTERNAL_H
#define PYLOG_INTERNAL_H

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

/* What encoding n records of a source takes: sized first, so a caller can
 * choose where the batch goes before anything is written. */
typedef struct {
    int64_t base_ts, max_ts;
    size_t rsize;  /* records section */
    size_t total;  /* whole batch     */
} pli_batch_plan_t;

#define PACKED_SRC(s)                                                                     \
    src_t s;                                                                              \
    memset(&s, 0, sizeof s);                                                              \
    s.packed = 1; s.stream = stream; s.stream_len = stream_len; s.blob = blob;            \
    s.blob_len = blob_len;                                                                \
    if (!stream && stream_len) return PL_E_INVAL;                                         \
    if (!blob && blob_len) return PL_E_INVAL

/* ------------------------------------------------------------------ */
/* partition state (P-2)                                               */
/* ------------------------------------------------------------------ */

typedef struct {
    uint32_t magic;
    uint32_t version;
    uint64_t seq;
    int64_t vals[6];
} pl_state_t;

_Static_assert(sizeof(pl_state_t) == PL_STATE_SIZE, "state layout");
_Static_assert(offsetof(pl_state_t, seq) == PL_STATE_OFF_SEQ, "P-2: seq at 8");
_Static_assert(offsetof(pl_state_t, vals) == PL_STATE_OFF_VALS, "P-2: fields from 16");

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* ------------------------------------------------------------------ */
/* shared between the source files                                     */
/* ------------------------------------------------------------------ */

/* encode.c: plan n records of a source (sizes, timestamps; validates
 * everything), then write the planned batch at out (p->total bytes). */
int pli_batch_plan(const pl_batch_meta *meta, uint32_t n, src_t *s, pli_batch_plan_t *p);
void pli_batch_write(uint8_t *out, const pl_batch_meta *meta, uint32_t n, src_t *s,
                     const pli_batch_plan_t *p);

/* decode.c: parse (B-2, B-3) the batch header at buf[pos:len]; with
 * check_crc, o->crc_valid says whether B-4 holds. 0 or a PL_C_* code. */
int pli_parse_header(const uint8_t *buf, size_t len, size_t pos, pl_batch_header_out *o,
                     int check_crc);

/* state.c: CLOCK_MONOTONIC in nanoseconds. */
int64_t pli_mono_ns(void);

/* counters.c: count an append / an fdatasync in the partition's counters
 * (P-10, P-11); the append form for the append lock's holder. */
void pli_count_append_locked(void *state, int64_t records, int64_t bytes);
void pli_count_fsync(void *state, int64_t ns);

#if defined(__linux__) && defined(F_OFD_GETLK)
#define PL_FUTEX_LOCK 1
/* Is the Log owning ``token`` alive (its liveness byte read-locked)? lock.c */
int pl_token_alive(int live_fd, uint32_t token);
/* Take / drop a futex lock word (uint32 holder token, uint32 waiters after
 * it) as the append lock does (P-3): 0 taken, 1 taken over from a dead
 * holder, PL_E_BUSY (held, wait == 0), PL_E_INVAL (held by this token /
 * not ours to drop). lock.c */
int pl_word_lock(uint32_t *w, uint32_t token, int live_fd, int wait);
int pl_word_unlock(uint32_t *w, uint32_t token);
#endif

#endif /* PYLOG_INTERNAL_H */
