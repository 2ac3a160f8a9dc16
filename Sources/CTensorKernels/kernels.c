#include "CTensorKernels.h"
#include <string.h>

static uint32_t crc_table[8][256];
static int crc_table_ready = 0;

static void crc_init_table(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
    __atomic_store_n(&crc_table_ready, 1, __ATOMIC_RELEASE);
}

static uint32_t crc32c_sw(uint32_t crc, const unsigned char *p, size_t n) {
    if (!__atomic_load_n(&crc_table_ready, __ATOMIC_ACQUIRE)) crc_init_table();
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        v ^= crc;
        crc = crc_table[7][v & 0xFF] ^ crc_table[6][(v >> 8) & 0xFF] ^ crc_table[5][(v >> 16) & 0xFF] ^
              crc_table[4][(v >> 24) & 0xFF] ^ crc_table[3][(v >> 32) & 0xFF] ^
              crc_table[2][(v >> 40) & 0xFF] ^ crc_table[1][(v >> 48) & 0xFF] ^ crc_table[0][v >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xFF];
    return crc;
}

#if defined(__x86_64__)
#include <cpuid.h>
/* One crc32 instruction has a latency of 3 cycles and a throughput of 1 per cycle, so a single
 * dependency chain runs at a third of the possible speed. Long buffers are therefore processed
 * as stripes of three blocks of CRC_BLOCK bytes, with three independent chains, and the three
 * register values are merged with a precomputed "append CRC_BLOCK zero bytes" operator
 * (CRC is linear: crc(A || B) = shift(crc(A), |B|) ^ crc0(B)). */
#define CRC_BLOCK 4096
static uint32_t crc_shift_table[4][256];
static int crc_shift_ready = 0;

__attribute__((target("sse4.2"))) static uint32_t crc32c_chain(uint32_t crc, const unsigned char *p, size_t n) {
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return c32;
}

__attribute__((target("sse4.2"))) static void crc_shift_init(void) {
    uint32_t basis[32];
    for (int i = 0; i < 32; i++) {
        uint64_t c = 1u << i;
        for (int k = 0; k < CRC_BLOCK / 8; k++) c = __builtin_ia32_crc32di(c, 0);
        basis[i] = (uint32_t)c;
    }
    for (int byte = 0; byte < 4; byte++)
        for (int b = 0; b < 256; b++) {
            uint32_t v = 0;
            for (int bit = 0; bit < 8; bit++)
                if (b & (1 << bit)) v ^= basis[byte * 8 + bit];
            crc_shift_table[byte][b] = v;
        }
    __atomic_store_n(&crc_shift_ready, 1, __ATOMIC_RELEASE);
}

static inline uint32_t crc_shift(uint32_t c) {
    return crc_shift_table[0][c & 0xFF] ^ crc_shift_table[1][(c >> 8) & 0xFF] ^
           crc_shift_table[2][(c >> 16) & 0xFF] ^ crc_shift_table[3][c >> 24];
}

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const unsigned char *p, size_t n) {
    if (n >= 3 * CRC_BLOCK) {
        if (!__atomic_load_n(&crc_shift_ready, __ATOMIC_ACQUIRE)) crc_shift_init();
        while (n >= 3 * CRC_BLOCK) {
            uint64_t a = crc, b = 0, c = 0;
            const unsigned char *pb = p + CRC_BLOCK, *pc = p + 2 * CRC_BLOCK;
            for (size_t i = 0; i < CRC_BLOCK; i += 8) {
                uint64_t va, vb, vc;
                memcpy(&va, p + i, 8);
                memcpy(&vb, pb + i, 8);
                memcpy(&vc, pc + i, 8);
                a = __builtin_ia32_crc32di(a, va);
                b = __builtin_ia32_crc32di(b, vb);
                c = __builtin_ia32_crc32di(c, vc);
            }
            crc = crc_shift(crc_shift((uint32_t)a) ^ (uint32_t)b) ^ (uint32_t)c;
            p += 3 * CRC_BLOCK;
            n -= 3 * CRC_BLOCK;
        }
    }
    return crc32c_chain(crc, p, n);
}
static int have_sse42(void) {
    static int cached = -1;
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
        unsigned a, b, c, d;
        v = (__get_cpuid(1, &a, &b, &c, &d) && (c & bit_SSE4_2)) ? 1 : 0;
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
}
#endif

uint32_t ctk_crc32c(uint32_t crc, const void *data, size_t length) {
    crc = ~crc;
#if defined(__x86_64__)
    if (have_sse42()) return ~crc32c_hw(crc, (const unsigned char *)data, length);
#endif
    return ~crc32c_sw(crc, (const unsigned char *)data, length);
}

void ctk_shuffle(const void *src, void *dst, size_t count, size_t elementSize) {
    const unsigned char *s = src;
    unsigned char *d = dst;
    if (elementSize == 4) {
        unsigned char *d0 = d, *d1 = d + count, *d2 = d + 2 * count, *d3 = d + 3 * count;
        for (size_t i = 0; i < count; i++) {
            d0[i] = s[4 * i];
            d1[i] = s[4 * i + 1];
            d2[i] = s[4 * i + 2];
            d3[i] = s[4 * i + 3];
        }
        return;
    }
    for (size_t i = 0; i < count; i++)
        for (size_t j = 0; j < elementSize; j++) d[j * count + i] = s[i * elementSize + j];
}

void ctk_unshuffle(const void *src, void *dst, size_t count, size_t elementSize) {
    const unsigned char *s = src;
    unsigned char *d = dst;
    if (elementSize == 4) {
        const unsigned char *s0 = s, *s1 = s + count, *s2 = s + 2 * count, *s3 = s + 3 * count;
        for (size_t i = 0; i < count; i++) {
            d[4 * i] = s0[i];
            d[4 * i + 1] = s1[i];
            d[4 * i + 2] = s2[i];
            d[4 * i + 3] = s3[i];
        }
        return;
    }
    for (size_t i = 0; i < count; i++)
        for (size_t j = 0; j < elementSize; j++) d[i * elementSize + j] = s[j * count + i];
}

void ctk_add_f32(float *restrict dst, const float *restrict src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] += src[i];
}
