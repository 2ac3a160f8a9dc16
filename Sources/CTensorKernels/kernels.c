#include "CTensorKernels.h"
#include <pthread.h>
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
static pthread_once_t crc_shift_once = PTHREAD_ONCE_INIT;

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

/* One crc32 instruction on each of three chains, over the 8 bytes at pa, pb and pc. */
__attribute__((target("sse4.2"), always_inline)) static inline void crc3_step(
    uint64_t *a, uint64_t *b, uint64_t *c, const unsigned char *pa, const unsigned char *pb, const unsigned char *pc) {
    uint64_t va, vb, vc;
    memcpy(&va, pa, 8);
    memcpy(&vb, pb, 8);
    memcpy(&vc, pc, 8);
    *a = __builtin_ia32_crc32di(*a, va);
    *b = __builtin_ia32_crc32di(*b, vb);
    *c = __builtin_ia32_crc32di(*c, vc);
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
        if (!__atomic_load_n(&crc_shift_ready, __ATOMIC_ACQUIRE)) pthread_once(&crc_shift_once, crc_shift_init);
        while (n >= 3 * CRC_BLOCK) {
            uint64_t a = crc, b = 0, c = 0;
            const unsigned char *pb = p + CRC_BLOCK, *pc = p + 2 * CRC_BLOCK;
            for (size_t i = 0; i < CRC_BLOCK; i += 8) crc3_step(&a, &b, &c, p + i, pb + i, pc + i);
            crc = crc_shift(crc_shift((uint32_t)a) ^ (uint32_t)b) ^ (uint32_t)c;
            p += 3 * CRC_BLOCK;
            n -= 3 * CRC_BLOCK;
        }
    }
    return crc32c_chain(crc, p, n);
}
/* Carry-less multiplication folding (PCLMULQDQ): four 128-bit accumulators run over the data
 * 64 bytes at a time; each step multiplies an accumulator's halves by two constants, which moves
 * its contribution 64 bytes forward, and XORs in the next block. At the end the accumulators are
 * folded into one, whose 16 bytes go through the crc32 instruction with the tail.
 *
 * The constants are not typed in: they are solved at first use as a linear system over GF(2),
 * with the crc32 instruction as the reference (folding is linear in the constant), so no
 * bit-reflection convention can be got wrong. If the system had no solution this path would
 * stay off. */
#include <immintrin.h>

static uint64_t fold_k[4][2]; /* [distance: 64, 16, 256 or 128 bytes][lo half, hi half] */
static int fold_state = 0;    /* 0 unknown, 1 ready, -1 unavailable */
static pthread_once_t fold_once = PTHREAD_ONCE_INIT;

/* The raw CRC register after `n` bytes of `buf` starting from 0. */
static uint32_t reg_of(const unsigned char *buf, size_t n) { return crc32c_chain(0, buf, n); }

/* Solves K (64 bits) with reg((K << i) placed at bit `base`) == target(i) for i in 0..63. */
static int solve_fold(size_t distance, int base, uint64_t *out) {
    unsigned char buf[16 + 256];
    size_t len = 16 + distance;
    uint32_t R[128], target[64];
    for (int m = 0; m < 128; m++) {
        memset(buf, 0, sizeof buf);
        buf[m / 8] = (unsigned char)(1u << (m % 8));
        R[m] = reg_of(buf, 16);
    }
    for (int i = 0; i < 64; i++) {
        memset(buf, 0, sizeof buf);
        int bit = base + i;
        buf[bit / 8] = (unsigned char)(1u << (bit % 8));
        target[i] = reg_of(buf, len);
    }
    /* Rows: 64 coefficient bits + 1 right-hand side bit; 64 x 32 equations. */
    uint64_t rows[64 * 32];
    unsigned char rhs[64 * 32];
    int count = 0;
    for (int i = 0; i < 64; i++)
        for (int b = 0; b < 32; b++) {
            uint64_t row = 0;
            for (int j = 0; j < 64; j++)
                if (i + j < 128 && ((R[i + j] >> b) & 1)) row |= (uint64_t)1 << j;
            rows[count] = row;
            rhs[count] = (target[i] >> b) & 1;
            count++;
        }
    int pivot_row[64];
    int r = 0;
    for (int col = 0; col < 64; col++) {
        pivot_row[col] = -1;
        int sel = -1;
        for (int k = r; k < count; k++)
            if ((rows[k] >> col) & 1) { sel = k; break; }
        if (sel < 0) continue;
        uint64_t tr = rows[sel]; rows[sel] = rows[r]; rows[r] = tr;
        unsigned char tb = rhs[sel]; rhs[sel] = rhs[r]; rhs[r] = tb;
        for (int k = 0; k < count; k++)
            if (k != r && ((rows[k] >> col) & 1)) { rows[k] ^= rows[r]; rhs[k] ^= rhs[r]; }
        pivot_row[col] = r++;
    }
    /* Inconsistent if a zero row has a nonzero right-hand side. */
    for (int k = r; k < count; k++)
        if (rows[k] == 0 && rhs[k]) return 0;
    uint64_t K = 0;
    for (int col = 0; col < 64; col++)
        if (pivot_row[col] >= 0 && rhs[pivot_row[col]]) K |= (uint64_t)1 << col;
    *out = K;
    return 1;
}

__attribute__((target("pclmul,sse4.2"))) static __m128i fold_by(__m128i x, __m128i k) {
    return _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11));
}

static void fold_init(void) {
    int ok = solve_fold(64, 0, &fold_k[0][0]) && solve_fold(64, 64, &fold_k[0][1]) &&
             solve_fold(16, 0, &fold_k[1][0]) && solve_fold(16, 64, &fold_k[1][1]) &&
             solve_fold(256, 0, &fold_k[2][0]) && solve_fold(256, 64, &fold_k[2][1]) &&
             solve_fold(128, 0, &fold_k[3][0]) && solve_fold(128, 64, &fold_k[3][1]);
    __atomic_store_n(&fold_state, ok ? 1 : -1, __ATOMIC_RELEASE);
}

/* Folds four consecutive 16-byte accumulators into one, then the remaining whole 16-byte blocks
 * of `p`, and finishes with the crc32 instruction over the folded 16 bytes and the tail. */
__attribute__((target("pclmul,sse4.2"))) static uint32_t fold_finish(
    __m128i a, __m128i b, __m128i c, __m128i d, const unsigned char *p, size_t n) {
    const __m128i k16 = _mm_set_epi64x((long long)fold_k[1][1], (long long)fold_k[1][0]);
    __m128i x = _mm_xor_si128(fold_by(a, k16), b);
    x = _mm_xor_si128(fold_by(x, k16), c);
    x = _mm_xor_si128(fold_by(x, k16), d);
    while (n >= 16) {
        x = _mm_xor_si128(fold_by(x, k16), _mm_loadu_si128((const __m128i *)p));
        p += 16;
        n -= 16;
    }
    unsigned char last[16];
    _mm_storeu_si128((__m128i *)last, x);
    return crc32c_chain(crc32c_chain(0, last, 16), p, n);
}

__attribute__((target("pclmul,sse4.2"))) static uint32_t crc32c_fold(uint32_t crc, const unsigned char *p, size_t n) {
    const __m128i k64 = _mm_set_epi64x((long long)fold_k[0][1], (long long)fold_k[0][0]);
    __m128i x0 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)p), _mm_cvtsi32_si128((int)crc));
    __m128i x1 = _mm_loadu_si128((const __m128i *)(p + 16));
    __m128i x2 = _mm_loadu_si128((const __m128i *)(p + 32));
    __m128i x3 = _mm_loadu_si128((const __m128i *)(p + 48));
    p += 64;
    n -= 64;
    while (n >= 64) {
        x0 = _mm_xor_si128(fold_by(x0, k64), _mm_loadu_si128((const __m128i *)p));
        x1 = _mm_xor_si128(fold_by(x1, k64), _mm_loadu_si128((const __m128i *)(p + 16)));
        x2 = _mm_xor_si128(fold_by(x2, k64), _mm_loadu_si128((const __m128i *)(p + 32)));
        x3 = _mm_xor_si128(fold_by(x3, k64), _mm_loadu_si128((const __m128i *)(p + 48)));
        p += 64;
        n -= 64;
    }
    return fold_finish(x0, x1, x2, x3, p, n);
}

/* The same folding four 16-byte lanes at a time (AVX-512 VPCLMULQDQ): four 64-byte
 * accumulators, each moved 256 bytes forward per step; then 64-byte, then 16-byte folds. */
__attribute__((target("avx512f,avx512vl,vpclmulqdq,pclmul,sse4.2"))) static __m512i fold512(__m512i x, __m512i k) {
    return _mm512_xor_si512(_mm512_clmulepi64_epi128(x, k, 0x00), _mm512_clmulepi64_epi128(x, k, 0x11));
}

__attribute__((target("avx512f,avx512vl,vpclmulqdq,pclmul,sse4.2"))) static uint32_t crc32c_fold512(
    uint32_t crc, const unsigned char *p, size_t n) {
    const __m512i k256 = _mm512_set_epi64((long long)fold_k[2][1], (long long)fold_k[2][0], (long long)fold_k[2][1],
                                          (long long)fold_k[2][0], (long long)fold_k[2][1], (long long)fold_k[2][0],
                                          (long long)fold_k[2][1], (long long)fold_k[2][0]);
    const __m512i k64 = _mm512_set_epi64((long long)fold_k[0][1], (long long)fold_k[0][0], (long long)fold_k[0][1],
                                         (long long)fold_k[0][0], (long long)fold_k[0][1], (long long)fold_k[0][0],
                                         (long long)fold_k[0][1], (long long)fold_k[0][0]);
    __m512i x0 = _mm512_xor_si512(_mm512_loadu_si512(p), _mm512_zextsi128_si512(_mm_cvtsi32_si128((int)crc)));
    __m512i x1 = _mm512_loadu_si512(p + 64);
    __m512i x2 = _mm512_loadu_si512(p + 128);
    __m512i x3 = _mm512_loadu_si512(p + 192);
    p += 256;
    n -= 256;
    while (n >= 256) {
        x0 = _mm512_xor_si512(fold512(x0, k256), _mm512_loadu_si512(p));
        x1 = _mm512_xor_si512(fold512(x1, k256), _mm512_loadu_si512(p + 64));
        x2 = _mm512_xor_si512(fold512(x2, k256), _mm512_loadu_si512(p + 128));
        x3 = _mm512_xor_si512(fold512(x3, k256), _mm512_loadu_si512(p + 192));
        p += 256;
        n -= 256;
    }
    __m512i x = _mm512_xor_si512(fold512(x0, k64), x1);
    x = _mm512_xor_si512(fold512(x, k64), x2);
    x = _mm512_xor_si512(fold512(x, k64), x3);
    while (n >= 64) {
        x = _mm512_xor_si512(fold512(x, k64), _mm512_loadu_si512(p));
        p += 64;
        n -= 64;
    }
    return fold_finish(_mm512_extracti32x4_epi32(x, 0), _mm512_extracti32x4_epi32(x, 1),
                       _mm512_extracti32x4_epi32(x, 2), _mm512_extracti32x4_epi32(x, 3), p, n);
}

/* The same with AVX2's 256-bit VPCLMULQDQ (two 16-byte lanes per instruction), for CPUs that
 * have it without AVX-512 (AMD Zen 3, where one 128-bit PCLMULQDQ issues every other cycle, so
 * the 128-bit folding above runs at 9-12 GB/s on a 1 MiB buffer in cache, the crc32 chains at
 * 17-19 and this at 22-25; BENCHMARKS.md "Checksums"): four 32-byte accumulators, each moved
 * 128 bytes forward per step; then down to four 16-byte lanes. */
__attribute__((target("avx2,vpclmulqdq,pclmul,sse4.2"))) static __m256i fold256(__m256i x, __m256i k) {
    return _mm256_xor_si256(_mm256_clmulepi64_epi128(x, k, 0x00), _mm256_clmulepi64_epi128(x, k, 0x11));
}

#define FOLD256 __attribute__((target("avx2,vpclmulqdq,pclmul,sse4.2"), always_inline)) static inline

/* The four accumulators over the first 128 bytes at p, with the running CRC in the first. */
FOLD256 void fold256_start(__m256i x[4], uint32_t crc, const unsigned char *p) {
    x[0] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)p), _mm256_zextsi128_si256(_mm_cvtsi32_si128((int)crc)));
    for (int j = 1; j < 4; j++) x[j] = _mm256_loadu_si256((const __m256i *)(p + 32 * j));
}

/* Each accumulator moved 128 bytes forward, and the 128 bytes at p folded in. */
FOLD256 void fold256_step(__m256i x[4], __m256i k128, const unsigned char *p) {
    for (int j = 0; j < 4; j++) x[j] = _mm256_xor_si256(fold256(x[j], k128), _mm256_loadu_si256((const __m256i *)(p + 32 * j)));
}

/* The register after the accumulators, then the n bytes at p (64 at a time, then the tail). */
FOLD256 uint32_t fold256_end(const __m256i x[4], const unsigned char *p, size_t n) {
    const __m256i k64 = _mm256_set_epi64x((long long)fold_k[0][1], (long long)fold_k[0][0],
                                          (long long)fold_k[0][1], (long long)fold_k[0][0]);
    /* The last 128 bytes are lanes L0..L7 (x0 = L0,L1 … x3 = L6,L7): fold L0..L3 onto L4..L7. */
    __m256i y0 = _mm256_xor_si256(fold256(x[0], k64), x[2]);
    __m256i y1 = _mm256_xor_si256(fold256(x[1], k64), x[3]);
    while (n >= 64) {
        y0 = _mm256_xor_si256(fold256(y0, k64), _mm256_loadu_si256((const __m256i *)p));
        y1 = _mm256_xor_si256(fold256(y1, k64), _mm256_loadu_si256((const __m256i *)(p + 32)));
        p += 64;
        n -= 64;
    }
    return fold_finish(_mm256_castsi256_si128(y0), _mm256_extracti128_si256(y0, 1), _mm256_castsi256_si128(y1),
                       _mm256_extracti128_si256(y1, 1), p, n);
}

FOLD256 __m256i fold256_k128(void) {
    return _mm256_set_epi64x((long long)fold_k[3][1], (long long)fold_k[3][0], (long long)fold_k[3][1],
                             (long long)fold_k[3][0]);
}

__attribute__((target("avx2,vpclmulqdq,pclmul,sse4.2"))) static uint32_t crc32c_fold256(
    uint32_t crc, const unsigned char *p, size_t n) {
    const __m256i k128 = fold256_k128();
    __m256i x[4];
    fold256_start(x, crc, p);
    for (p += 128, n -= 128; n >= 128; p += 128, n -= 128) fold256_step(x, k128, p);
    return fold256_end(x, p, n);
}

/* Folding and the crc32 instruction at once. They run on different execution units (vector and
 * integer), so one loop that feeds both goes faster than either alone. On Zen 3, for a 1 MiB chunk
 * in cache: 29 GB/s against 25 for the folding and 18 for three crc32 chains; from memory 12.8
 * against 11.5 (`smlt-bench checksum`, BENCHMARKS.md "Checksums").
 * The data is taken as superblocks of HYBRID_VECTOR bytes for the folding (the first 128 bytes,
 * then 128 per step) followed by three blocks of CRC_BLOCK bytes, one per crc32 chain (32 bytes of
 * each per step). A superblock's four registers are merged as crc32c_hw merges its stripes. */
#define HYBRID_STEPS (CRC_BLOCK / 32)
#define HYBRID_VECTOR (128 * (HYBRID_STEPS + 1))
#define HYBRID_SUPERBLOCK (HYBRID_VECTOR + 3 * CRC_BLOCK)

__attribute__((target("avx2,vpclmulqdq,pclmul,sse4.2"))) static uint32_t crc32c_hybrid256(
    uint32_t crc, const unsigned char *p, size_t n) {
    const __m256i k128 = fold256_k128();
    if (!__atomic_load_n(&crc_shift_ready, __ATOMIC_ACQUIRE)) pthread_once(&crc_shift_once, crc_shift_init);
    while (n >= HYBRID_SUPERBLOCK) {
        const unsigned char *q = p + 128, *pa = p + HYBRID_VECTOR, *pb = pa + CRC_BLOCK, *pc = pb + CRC_BLOCK;
        __m256i x[4];
        fold256_start(x, crc, p);
        uint64_t a = 0, b = 0, c = 0;
        for (int step = 0; step < HYBRID_STEPS; step++, q += 128, pa += 32, pb += 32, pc += 32) {
            fold256_step(x, k128, q);
            for (int k = 0; k < 32; k += 8) crc3_step(&a, &b, &c, pa + k, pb + k, pc + k);
        }
        uint32_t folded = fold256_end(x, q, 0);
        crc = crc_shift(crc_shift(crc_shift(folded) ^ (uint32_t)a) ^ (uint32_t)b) ^ (uint32_t)c;
        p += HYBRID_SUPERBLOCK;
        n -= HYBRID_SUPERBLOCK;
    }
    if (n >= 512) return crc32c_fold256(crc, p, n);
    return crc32c_chain(crc, p, n);
}
#undef FOLD256

enum { CPU_SSE42 = 1, CPU_PCLMUL = 2, CPU_VPCLMUL = 4, CPU_VPCLMUL256 = 8 };

/* The instruction sets the CRC paths use, detected once. */
static int cpu_features(void) {
    static int cached = -1;
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
        unsigned a, b, c, d;
        v = 0;
        if (__get_cpuid(1, &a, &b, &c, &d)) {
            if (c & bit_SSE4_2) v |= CPU_SSE42;
            if (c & bit_PCLMUL) v |= CPU_PCLMUL;
        }
        /* AVX-512F/VL (which also checks that the OS saves the ZMM state) and VPCLMULQDQ in
         * CPUID leaf 7. */
        int vpclmul = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (c & (1u << 10));
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && vpclmul) v |= CPU_VPCLMUL;
        /* AVX2 (which also checks that the OS saves the YMM state) and VPCLMULQDQ. */
        if (__builtin_cpu_supports("avx2") && vpclmul) v |= CPU_VPCLMUL256;
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
}
#endif

uint32_t ctk_crc32c(uint32_t crc, const void *data, size_t length) {
    crc = ~crc;
#if defined(__x86_64__)
    const int cpu = cpu_features();
    if (cpu & CPU_SSE42) {
        const unsigned char *p = (const unsigned char *)data;
        if (length >= 256 && (cpu & CPU_PCLMUL)) {
            /* Solved once; threads arriving meanwhile wait for it. */
            pthread_once(&fold_once, fold_init);
            if (__atomic_load_n(&fold_state, __ATOMIC_ACQUIRE) == 1) {
                if (length >= 1024 && (cpu & CPU_VPCLMUL)) return ~crc32c_fold512(crc, p, length);
                if (length >= HYBRID_SUPERBLOCK && (cpu & CPU_VPCLMUL256)) return ~crc32c_hybrid256(crc, p, length);
                if (length >= 512 && (cpu & CPU_VPCLMUL256)) return ~crc32c_fold256(crc, p, length);
                return ~crc32c_fold(crc, p, length);
            }
        }
        return ~crc32c_hw(crc, p, length);
    }
#endif
    return ~crc32c_sw(crc, (const unsigned char *)data, length);
}

int ctk_crc32c_path_available(int path) {
    switch (path) {
    case CTK_CRC_AUTO:
    case CTK_CRC_TABLE: return 1;
#if defined(__x86_64__)
    case CTK_CRC_CHAINS: return (cpu_features() & CPU_SSE42) != 0;
    case CTK_CRC_FOLD128:
    case CTK_CRC_FOLD256:
    case CTK_CRC_FOLD256_CHAINS:
    case CTK_CRC_FOLD512: {
        const int cpu = cpu_features();
        if (!(cpu & CPU_SSE42) || !(cpu & CPU_PCLMUL)) return 0;
        pthread_once(&fold_once, fold_init);
        if (__atomic_load_n(&fold_state, __ATOMIC_ACQUIRE) != 1) return 0;
        if (path == CTK_CRC_FOLD512) return (cpu & CPU_VPCLMUL) != 0;
        if (path != CTK_CRC_FOLD128) return (cpu & CPU_VPCLMUL256) != 0;
        return 1;
    }
#endif
    default: return 0;
    }
}

int ctk_crc32c_with(uint32_t *crc, const void *data, size_t length, int path) {
    if (!ctk_crc32c_path_available(path)) return 0;
    const unsigned char *p = (const unsigned char *)data;
    uint32_t c = ~*crc;
    switch (path) {
    case CTK_CRC_AUTO: *crc = ctk_crc32c(*crc, data, length); return 1;
    case CTK_CRC_TABLE: c = crc32c_sw(c, p, length); break;
#if defined(__x86_64__)
    /* Each path takes what it can and leaves shorter tails to the one below it, as ctk_crc32c. */
    case CTK_CRC_CHAINS: c = crc32c_hw(c, p, length); break;
    case CTK_CRC_FOLD128: c = length >= 256 ? crc32c_fold(c, p, length) : crc32c_hw(c, p, length); break;
    case CTK_CRC_FOLD256: c = length >= 512 ? crc32c_fold256(c, p, length) : crc32c_hw(c, p, length); break;
    case CTK_CRC_FOLD256_CHAINS:
        c = length >= 512 ? crc32c_hybrid256(c, p, length) : crc32c_hw(c, p, length);
        break;
    case CTK_CRC_FOLD512: c = length >= 1024 ? crc32c_fold512(c, p, length) : crc32c_hw(c, p, length); break;
#endif
    default: return 0;
    }
    *crc = ~c;
    return 1;
}

void ctk_add_f32(float *restrict dst, const float *restrict src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] += src[i];
}

/* A float is NaN or infinite exactly when its exponent bits are all ones. The checks below read
 * the bits as integers and OR a flag over the whole array, without an early exit, so the loops
 * vectorize (SSE2: a compare and an OR per 4 floats) and cost little next to the loads. */
#define CTK_EXP_MASK 0x7f800000u

static inline uint32_t ctk_bits(float f) {
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

int ctk_add_f32_finite(float *restrict dst, const float *restrict src, size_t n) {
    uint32_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        float s = src[i];
        dst[i] += s;
        bad |= (ctk_bits(s) & CTK_EXP_MASK) == CTK_EXP_MASK;
    }
    return bad == 0;
}

int ctk_all_finite_f32(const float *restrict src, size_t n) {
    uint32_t bad = 0;
    for (size_t i = 0; i < n; i++) bad |= (ctk_bits(src[i]) & CTK_EXP_MASK) == CTK_EXP_MASK;
    return bad == 0;
}

size_t ctk_first_nonfinite_f32(const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if ((ctk_bits(src[i]) & CTK_EXP_MASK) == CTK_EXP_MASK) return i;
    }
    return n;
}
