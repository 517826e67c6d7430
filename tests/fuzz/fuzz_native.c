/* Fuzz target over pylog's C core (csrc/, declared in pylog_native.h):
 * batch header, records decoding, segment scan, index search/validation.  Built by
 * tests/test_fuzz.py with AddressSanitizer + UBSan, either as a libFuzzer
 * target (clang -fsanitize=fuzzer) or, with -DPL_STANDALONE_FUZZ, with its
 * own driver: random inputs and mutations of valid batches for a time
 * budget (argv: seed seconds), printing the number of executions. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "pylog_native.h"

static void run_one(const uint8_t *data, size_t size) {
    if (size < 1) return;
    uint8_t mode = data[0];
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    /* copy into an exact-size heap buffer so ASan sees any overread */
    uint8_t *buf = malloc(n ? n : 1);
    memcpy(buf, p, n);
    pl_batch_header_out h;
    if (pl_batch_header(buf, n, 0, &h) == 0 && n >= PL_BATCH_HEADER_SIZE) {
        int32_t cnt = h.records_count;
        if (cnt > 0 && cnt < 4096 && (size_t)h.batch_length + 12 <= n) {
            size_t rl = (size_t)h.batch_length + 12 - PL_BATCH_HEADER_SIZE;
            int64_t *out = malloc(sizeof(int64_t) * PL_RECORD_FIELDS * (size_t)cnt);
            int64_t hdr[PL_HEADER_FIELDS * 16];
            size_t total = 0, err = 0;
            pl_records_decode(buf + PL_BATCH_HEADER_SIZE, rl, cnt, h.last_offset_delta,
                              out, hdr, 16, &total, &err);
            free(out);
        }
    }
    /* records section decoding on the raw bytes */
    {
        int32_t cnt = (int32_t)(mode % 9);
        int64_t out[PL_RECORD_FIELDS * 8];
        int64_t hdr[PL_HEADER_FIELDS * 4];
        size_t total = 0, err = 0;
        if (pl_records_decode(buf, n, cnt, cnt ? cnt - 1 + (mode >> 6) : 0, cnt ? out : NULL,
                              hdr, 4, &total, &err) == 0 && cnt) {
            /* the shape of what decoded, into a tight and a roomy buffer */
            char fmt[2 * 22 * 8];
            size_t fl;
            uint32_t flags;
            pl_records_shape(out, (uint32_t)cnt, mode & 1, 0, fmt, (mode >> 1) % sizeof fmt,
                             &fl, &flags);
            pl_records_shape(out, (uint32_t)cnt, mode & 1, 0, fmt, sizeof fmt, &fl, &flags);
        }
    }
    {
        /* many batches in one call, from an arbitrary position and offset */
        int64_t fields[PL_RECORD_FIELDS * 16], hdrs[PL_HEADER_FIELDS * 8];
        pl_fetch_out fo;
        size_t start = n ? (mode * 13u) % n : 0;
        pl_fetch(buf, n, start, (int64_t)(mode >> 3), mode & 8 ? -1 : (int64_t)(mode >> 4),
                 1 + mode % 20, 1 + mode % 7, fields, 16, mode & 4 ? NULL : hdrs,
                 mode & 6 ? 0 : 8, &fo);
        pl_fetch(buf, n, 0, 0, -1, 16, 16, fields, 16, hdrs, 8, &fo);
    }
    {
        int32_t idx[2 * 8];
        int64_t tidx[2 * 8];
        pl_scan_out so;
        size_t start = n ? (mode * 7u) % n : 0;
        pl_segment_scan(buf, n, start, mode & 1 ? -1 : 0, 0, 64, 0, -1, idx, tidx, 8, &so);
        pl_segment_scan(buf, n, 0, 0, 0, 64, 0, -1, idx, tidx, 8, &so);
    }
    {
        int32_t rel, pos;
        int64_t ts;
        int32_t target = n >= 4 ? (int32_t)(buf[0] << 8 | buf[1]) - 100 : mode;
        pl_index_lookup(buf, n, target, &rel, &pos);
        pl_index_validate(buf, n, (int64_t)n * (mode & 3));
        pl_timeindex_lookup(buf, n, (int64_t)target * 1000, &ts, &rel);
        pl_timeindex_validate(buf, n);
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    run_one(data, size);
    return 0;
}

#ifdef PL_STANDALONE_FUZZ
static uint64_t rs;
static uint32_t rnd(void) { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return (uint32_t)rs; }

/* a valid segment of a few batches to mutate */
static size_t make_valid(uint8_t *out, size_t cap) {
    size_t pos = 0;
    int64_t base = 0;
    for (int b = 0; b < 4; b++) {
        uint32_t nrec = 1 + rnd() % 5;
        int64_t ts[8], kl[8], vl[8];
        const uint8_t *k[8], *v[8];
        static const uint8_t bytes[256] = "some key and some value bytes";
        for (uint32_t i = 0; i < nrec; i++) {
            ts[i] = 1700000000000LL + rnd() % 1000;
            kl[i] = (rnd() % 3) ? (int64_t)(rnd() % 20) : -1;
            vl[i] = (rnd() % 5) ? (int64_t)(rnd() % 200) : -1;
            k[i] = bytes; v[i] = bytes;
        }
        pl_batch_meta m = {0};
        m.base_offset = base; m.producer_id = -1; m.producer_epoch = -1; m.base_sequence = -1;
        size_t w = 0;
        if (pl_batch_encode(out + pos, cap - pos, &w, &m, nrec, ts, k, kl, v, vl, NULL,
                            NULL, NULL, NULL, NULL) != 0)
            break;
        pos += w;
        base += nrec;
    }
    return pos;
}

int main(int argc, char **argv) {
    uint64_t seed = argc > 1 ? strtoull(argv[1], 0, 10) : 1;
    double budget = argc > 2 ? atof(argv[2]) : 10;
    rs = seed * 2654435761u + 1;
    static uint8_t buf[8192];
    long execs = 0;
    time_t t0 = time(NULL);
    while (difftime(time(NULL), t0) < budget) {
        for (int it = 0; it < 1000; it++) {
            size_t n;
            buf[0] = (uint8_t)rnd();
            if (rnd() % 3 == 0) {
                n = 1 + rnd() % 2048;
                for (size_t i = 1; i < n; i++) buf[i] = (uint8_t)rnd();
            } else {
                n = 1 + make_valid(buf + 1, sizeof buf - 1);
                int flips = 1 + rnd() % 6;
                for (int f = 0; f < flips && n > 1; f++) {
                    size_t at = 1 + rnd() % (n - 1);
                    switch (rnd() % 4) {
                    case 0: buf[at] ^= (uint8_t)(1u << (rnd() % 8)); break;
                    case 1: buf[at] = (uint8_t)rnd(); break;
                    case 2: n = at; break;                                  /* truncate */
                    default: memset(buf + at, rnd() % 2 ? 0 : 0xff,
                                    (n - at) < 8 ? (n - at) : 8);          /* zero / ff */
                    }
                }
            }
            run_one(buf, n);
            execs++;
        }
    }
    printf("fuzz execs: %ld (seed %llu)\n", execs, (unsigned long long)seed);
    return 0;
}
#endif
