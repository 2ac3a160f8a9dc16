#include "simd.h"
#include <string.h>

/* f32 <-> bf16 and f32 <-> f16 (IEEE binary16), the rules of docs/wire-format.md:
 * - to bf16: round to nearest, ties to even, on the bit pattern (x + 0x7FFF + lsb) >> 16; a NaN
 *   keeps its sign and top payload bits and gets the quiet bit (0x0040), so it stays a NaN.
 *   Finite values round to infinity only past the largest bf16. Subnormals are kept.
 * - from bf16: the 16 bits become the top of the f32 (exact).
 * - to f16: round to nearest, ties to even, as x86's F16C (VCVTPS2PH with imm 0) does: values
 *   from 65520 up become infinity, values at most 2^-25 become zero, f16 subnormals are exact
 *   roundings, a NaN becomes sign | 0x7E00 | top 9 payload bits.
 * - from f16: exact; a NaN gets the f32 quiet bit (as VCVTPH2PS does).
 * The portable loops are the reference; the SIMD paths give the same bits (tested on every f16,
 * every bf16 high half with the rounding-relevant low halves, and random data). */

static inline uint32_t bits_of(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}

static inline float float_of(uint32_t b) {
    float f;
    memcpy(&f, &b, 4);
    return f;
}

static inline uint16_t bf16_round(uint32_t x) {
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((x >> 16) | 0x0040u);
    return (uint16_t)((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

static inline uint16_t f16_round(uint32_t x) {
    uint32_t sign = (x >> 16) & 0x8000u, a = x & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return (uint16_t)(sign | 0x7E00u | ((a >> 13) & 0x3FFu));
    if (a >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u); /* 65520 and up: infinity */
    if (a >= 0x38800000u)                                     /* a normal f16 (from 2^-14) */
        return (uint16_t)(sign | ((a - 0x38000000u + 0xFFFu + ((a >> 13) & 1u)) >> 13));
    /* A subnormal f16 (or zero): the value in units of 2^-24, rounded to nearest even. */
    uint32_t e = a >> 23;
    if (e < 102) return (uint16_t)sign; /* at most 2^-25: rounds to zero */
    uint32_t m = (a & 0x7FFFFFu) | 0x800000u, shift = 126 - e; /* 14..24 */
    uint32_t r = m >> shift, rest = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    r += (rest > half) | ((rest == half) & r);
    return (uint16_t)(sign | r);
}

static inline uint32_t f16_widen(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
    if (e == 0x1F) return sign | 0x7F800000u | (m << 13) | (m ? 0x400000u : 0);
    if (e != 0) return sign | ((e + 112) << 23) | (m << 13);
    if (m == 0) return sign;
    /* Subnormal: m * 2^-24, normalized. */
    int shift = __builtin_clz(m) - 21; /* moves the leading one to bit 10 */
    return sign | ((uint32_t)(113 - shift) << 23) | (((m << shift) & 0x3FFu) << 13);
}

static void to_bf16_portable(const float *src, uint16_t *dst, size_t from, size_t n) {
    for (size_t i = from; i < n; i++) dst[i] = bf16_round(bits_of(src[i]));
}

static void from_bf16_portable(const uint16_t *src, float *dst, size_t from, size_t n) {
    for (size_t i = from; i < n; i++) dst[i] = float_of((uint32_t)src[i] << 16);
}

static void to_f16_portable(const float *src, uint16_t *dst, size_t from, size_t n) {
    for (size_t i = from; i < n; i++) dst[i] = f16_round(bits_of(src[i]));
}

static void from_f16_portable(const uint16_t *src, float *dst, size_t from, size_t n) {
    for (size_t i = from; i < n; i++) dst[i] = float_of(f16_widen(src[i]));
}

#if defined(__x86_64__)
#include <immintrin.h>

/* The bf16 rounding on four lanes: NaN lanes take x | quiet bit, the others x + 0x7FFF + lsb;
 * an arithmetic shift leaves each result as a sign-extended 16-bit value, which the signed
 * saturating pack keeps exactly. */
static inline __m128i bf16_lanes_sse2(__m128i x) {
    const __m128i abs = _mm_set1_epi32(0x7FFFFFFF), inf = _mm_set1_epi32(0x7F800000);
    __m128i nan = _mm_cmpgt_epi32(_mm_and_si128(x, abs), inf);
    __m128i lsb = _mm_and_si128(_mm_srli_epi32(x, 16), _mm_set1_epi32(1));
    __m128i rounded = _mm_add_epi32(x, _mm_add_epi32(_mm_set1_epi32(0x7FFF), lsb));
    __m128i quiet = _mm_or_si128(x, _mm_set1_epi32(0x00400000));
    __m128i r = _mm_or_si128(_mm_and_si128(nan, quiet), _mm_andnot_si128(nan, rounded));
    return _mm_srai_epi32(r, 16);
}

static size_t to_bf16_sse2(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i a = bf16_lanes_sse2(_mm_loadu_si128((const __m128i *)(src + i)));
        __m128i b = bf16_lanes_sse2(_mm_loadu_si128((const __m128i *)(src + i + 4)));
        _mm_storeu_si128((__m128i *)(dst + i), _mm_packs_epi32(a, b));
    }
    return i;
}

static size_t from_bf16_sse2(const uint16_t *src, float *dst, size_t n) {
    const __m128i zero = _mm_setzero_si128();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(src + i));
        _mm_storeu_si128((__m128i *)(dst + i), _mm_unpacklo_epi16(zero, h));
        _mm_storeu_si128((__m128i *)(dst + i + 4), _mm_unpackhi_epi16(zero, h));
    }
    return i;
}

#define AVX2 __attribute__((target("avx2")))

AVX2 static inline __m256i bf16_lanes_avx2(__m256i x) {
    const __m256i abs = _mm256_set1_epi32(0x7FFFFFFF), inf = _mm256_set1_epi32(0x7F800000);
    __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, abs), inf);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
    __m256i rounded = _mm256_add_epi32(x, _mm256_add_epi32(_mm256_set1_epi32(0x7FFF), lsb));
    __m256i quiet = _mm256_or_si256(x, _mm256_set1_epi32(0x00400000));
    return _mm256_srai_epi32(_mm256_blendv_epi8(rounded, quiet, nan), 16);
}

AVX2 static size_t to_bf16_avx2(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i a = bf16_lanes_avx2(_mm256_loadu_si256((const __m256i *)(src + i)));
        __m256i b = bf16_lanes_avx2(_mm256_loadu_si256((const __m256i *)(src + i + 8)));
        /* The pack works within 128-bit lanes; the permute puts the quarters in order. */
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8));
    }
    return i;
}

AVX2 static size_t from_bf16_avx2(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i h = _mm256_permute4x64_epi64(_mm256_loadu_si256((const __m256i *)(src + i)), 0xD8);
        __m256i zero = _mm256_setzero_si256();
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_unpacklo_epi16(zero, h));
        _mm256_storeu_si256((__m256i *)(dst + i + 8), _mm256_unpackhi_epi16(zero, h));
    }
    return i;
}

#define F16C __attribute__((target("avx,f16c")))

F16C static size_t to_f16_f16c(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m128i a = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
        __m128i b = _mm256_cvtps_ph(_mm256_loadu_ps(src + i + 8), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(dst + i), a);
        _mm_storeu_si128((__m128i *)(dst + i + 8), b);
    }
    return i;
}

F16C static size_t from_f16_f16c(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
        _mm256_storeu_ps(dst + i + 8, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i + 8))));
    }
    return i;
}
#endif

/* f16 paths: portable, F16C (AUTO takes F16C when the CPU has it); 0 when `impl` is not available
 * here or not a path of this conversion. The bf16 paths are `ctk_lane_impl`'s. */
static int f16_impl(int impl) {
    if (impl == CTK_IMPL_AUTO) return (ctk_cpu_simd() & CTK_CPU_F16C) ? CTK_IMPL_F16C : CTK_IMPL_PORTABLE;
    return (impl == CTK_IMPL_PORTABLE || impl == CTK_IMPL_F16C) && ctk_impl_available(impl) ? impl : 0;
}

int ctk_f32_to_bf16_with(const float *src, uint16_t *dst, size_t n, int impl) {
    impl = ctk_lane_impl(impl);
    size_t done = 0;
#if defined(__x86_64__)
    if (impl == CTK_IMPL_AVX2) done = to_bf16_avx2(src, dst, n);
    if (impl == CTK_IMPL_SSE2) done = to_bf16_sse2(src, dst, n);
#endif
    if (impl) to_bf16_portable(src, dst, done, n);
    return impl != 0;
}

int ctk_bf16_to_f32_with(const uint16_t *src, float *dst, size_t n, int impl) {
    impl = ctk_lane_impl(impl);
    size_t done = 0;
#if defined(__x86_64__)
    if (impl == CTK_IMPL_AVX2) done = from_bf16_avx2(src, dst, n);
    if (impl == CTK_IMPL_SSE2) done = from_bf16_sse2(src, dst, n);
#endif
    if (impl) from_bf16_portable(src, dst, done, n);
    return impl != 0;
}

int ctk_f32_to_f16_with(const float *src, uint16_t *dst, size_t n, int impl) {
    impl = f16_impl(impl);
    size_t done = 0;
#if defined(__x86_64__)
    if (impl == CTK_IMPL_F16C) done = to_f16_f16c(src, dst, n);
#endif
    if (impl) to_f16_portable(src, dst, done, n);
    return impl != 0;
}

int ctk_f16_to_f32_with(const uint16_t *src, float *dst, size_t n, int impl) {
    impl = f16_impl(impl);
    size_t done = 0;
#if defined(__x86_64__)
    if (impl == CTK_IMPL_F16C) done = from_f16_f16c(src, dst, n);
#endif
    if (impl) from_f16_portable(src, dst, done, n);
    return impl != 0;
}

void ctk_f32_to_bf16(const float *src, uint16_t *dst, size_t n) { ctk_f32_to_bf16_with(src, dst, n, CTK_IMPL_AUTO); }
void ctk_bf16_to_f32(const uint16_t *src, float *dst, size_t n) { ctk_bf16_to_f32_with(src, dst, n, CTK_IMPL_AUTO); }
void ctk_f32_to_f16(const float *src, uint16_t *dst, size_t n) { ctk_f32_to_f16_with(src, dst, n, CTK_IMPL_AUTO); }
void ctk_f16_to_f32(const uint16_t *src, float *dst, size_t n) { ctk_f16_to_f32_with(src, dst, n, CTK_IMPL_AUTO); }

/* Conversion and width-2 shuffle in one pass over cache-sized blocks: each block's 2-byte
 * elements live in a small stack buffer between the two steps instead of going through a
 * memory-sized intermediate array. The same bits as the two kernels one after the other. */
#define CTK_FUSED_BLOCK 4096

static void narrow_shuffled(const float *src, void *dst, size_t n, void (*narrow)(const float *, uint16_t *, size_t)) {
    uint16_t block[CTK_FUSED_BLOCK];
    unsigned char *d = dst;
    for (size_t i = 0; i < n; i += CTK_FUSED_BLOCK) {
        size_t m = n - i < CTK_FUSED_BLOCK ? n - i : CTK_FUSED_BLOCK;
        narrow(src + i, block, m);
        ctk_split2(block, d + i, d + n + i, m);
    }
}

static void shuffled_widen(const void *src, float *dst, size_t n, void (*widen)(const uint16_t *, float *, size_t)) {
    uint16_t block[CTK_FUSED_BLOCK];
    const unsigned char *s = src;
    for (size_t i = 0; i < n; i += CTK_FUSED_BLOCK) {
        size_t m = n - i < CTK_FUSED_BLOCK ? n - i : CTK_FUSED_BLOCK;
        ctk_join2(s + i, s + n + i, block, m);
        widen(block, dst + i, m);
    }
}

void ctk_f32_to_bf16_shuffled(const float *src, void *dst, size_t n) { narrow_shuffled(src, dst, n, ctk_f32_to_bf16); }
void ctk_f32_to_f16_shuffled(const float *src, void *dst, size_t n) { narrow_shuffled(src, dst, n, ctk_f32_to_f16); }
void ctk_bf16_shuffled_to_f32(const void *src, float *dst, size_t n) { shuffled_widen(src, dst, n, ctk_bf16_to_f32); }
void ctk_f16_shuffled_to_f32(const void *src, float *dst, size_t n) { shuffled_widen(src, dst, n, ctk_f16_to_f32); }
