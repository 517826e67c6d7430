/* CRC32C (B-4) with hardware dispatch, and Kafka's murmur2 partitioner. */
#include "internal.h"

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
