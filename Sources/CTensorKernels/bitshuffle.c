#include "simd.h"
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* The bit shuffle of docs/wire-format.md ("Codecs"): of `count` = n elements of `width` = w
 * bytes, the first m = n - n % 8 go to 8w bit planes of m/8 bytes, plane (j, b) holding bit b of
 * byte j of every element, element i at bit i % 8 of byte i / 8; the last n % 8 elements follow
 * as they are. It works in blocks of elements: a block's bytes are first byte-shuffled into a
 * small buffer (ctk_shuffle), then each byte plane is bit-transposed into its 8 bit planes. */

enum { BLOCK = 2048 }; /* elements per block: a multiple of 32, and w * BLOCK bytes fit in L1 */

/* Transposes an 8x8 bit matrix held in a u64 (row r = byte r, column c = bit c): afterwards
 * byte c holds, at bit r, what bit c of byte r was (Hacker's Delight, transpose8). */
static inline uint64_t transpose8(uint64_t x) {
    uint64_t t;
    t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AAull;
    x = x ^ t ^ (t << 7);
    t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCCull;
    x = x ^ t ^ (t << 14);
    t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0ull;
    x = x ^ t ^ (t << 28);
    return x;
}

/* Bit planes of `n` bytes (n % 8 == 0) at `in`: plane b (of n/8 bytes) starts at out + b * stride. */
static void transpose_portable(const unsigned char *in, size_t from, size_t n, unsigned char *out, size_t stride) {
    for (size_t i = from; i < n; i += 8) {
        uint64_t x = 0;
        for (int k = 0; k < 8; k++) x |= (uint64_t)in[i + k] << (8 * k);
        x = transpose8(x);
        for (int b = 0; b < 8; b++) out[(size_t)b * stride + i / 8] = (unsigned char)(x >> (8 * b));
    }
}

/* The inverse: n bytes at `out` from the 8 planes. */
static void untranspose_portable(const unsigned char *in, size_t stride, size_t from, size_t n, unsigned char *out) {
    for (size_t i = from; i < n; i += 8) {
        uint64_t x = 0;
        for (int b = 0; b < 8; b++) x |= (uint64_t)in[(size_t)b * stride + i / 8] << (8 * b);
        x = transpose8(x);
        for (int k = 0; k < 8; k++) out[i + k] = (unsigned char)(x >> (8 * k));
    }
}

#if defined(__x86_64__)
/* MOVMSKB gathers the top bit of every byte, element k at bit k: plane 7 first, then each byte
 * shifted left by one (an add to itself) for the next lower bit. */
static size_t transpose_sse2(const unsigned char *in, size_t n, unsigned char *out, size_t stride) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(in + i));
        for (int b = 7; b >= 0; b--) {
            uint16_t mask = (uint16_t)_mm_movemask_epi8(v);
            memcpy(out + (size_t)b * stride + i / 8, &mask, 2);
            v = _mm_add_epi8(v, v);
        }
    }
    return i;
}

/* Four vectors (128 bytes) at a time, so that each plane gets one 16-byte store instead of four
 * 4-byte ones: the planes are m/8 bytes apart, for a chunk a power of two, and the narrow stores
 * to them were the limit (5.4-6.0 against 2.9-3.5 GB/s for width 4 on this machine). */
__attribute__((target("avx2"))) static size_t transpose_avx2(
    const unsigned char *in, size_t n, unsigned char *out, size_t stride) {
    size_t i = 0;
    for (; i + 128 <= n; i += 128) {
        __m256i v0 = _mm256_loadu_si256((const __m256i *)(in + i));
        __m256i v1 = _mm256_loadu_si256((const __m256i *)(in + i + 32));
        __m256i v2 = _mm256_loadu_si256((const __m256i *)(in + i + 64));
        __m256i v3 = _mm256_loadu_si256((const __m256i *)(in + i + 96));
        for (int b = 7; b >= 0; b--) {
            uint64_t lo = (uint32_t)_mm256_movemask_epi8(v0) | (uint64_t)(uint32_t)_mm256_movemask_epi8(v1) << 32;
            uint64_t hi = (uint32_t)_mm256_movemask_epi8(v2) | (uint64_t)(uint32_t)_mm256_movemask_epi8(v3) << 32;
            _mm_storeu_si128((__m128i *)(out + (size_t)b * stride + i / 8), _mm_set_epi64x((long long)hi, (long long)lo));
            v0 = _mm256_add_epi8(v0, v0);
            v1 = _mm256_add_epi8(v1, v1);
            v2 = _mm256_add_epi8(v2, v2);
            v3 = _mm256_add_epi8(v3, v3);
        }
    }
    for (; i + 32 <= n; i += 32) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(in + i));
        for (int b = 7; b >= 0; b--) {
            uint32_t mask = (uint32_t)_mm256_movemask_epi8(v);
            memcpy(out + (size_t)b * stride + i / 8, &mask, 4);
            v = _mm256_add_epi8(v, v);
        }
    }
    return i;
}

/* The inverse transposes, 128 bytes at a time: 16 bytes of each of the 8 planes, byte-transposed
 * with unpacks into 16 u64s in `g` (byte b of u64 j = plane b's byte j), whose 8x8 bit matrices
 * transpose8 then turns into output bytes 8j..8j+7. About 4x the per-bit compares below on a
 * chunk's planes (7.9 against 1.9 GB/s). */
static inline void gather_planes(const unsigned char *p, size_t stride, __m128i g[8]) {
    __m128i q[8];
    for (int b = 0; b < 8; b++) q[b] = _mm_loadu_si128((const __m128i *)(p + (size_t)b * stride));
    __m128i a0 = _mm_unpacklo_epi8(q[0], q[1]), a1 = _mm_unpackhi_epi8(q[0], q[1]);
    __m128i b0 = _mm_unpacklo_epi8(q[2], q[3]), b1 = _mm_unpackhi_epi8(q[2], q[3]);
    __m128i c0 = _mm_unpacklo_epi8(q[4], q[5]), c1 = _mm_unpackhi_epi8(q[4], q[5]);
    __m128i d0 = _mm_unpacklo_epi8(q[6], q[7]), d1 = _mm_unpackhi_epi8(q[6], q[7]);
    __m128i e0 = _mm_unpacklo_epi16(a0, b0), e1 = _mm_unpackhi_epi16(a0, b0);
    __m128i e2 = _mm_unpacklo_epi16(a1, b1), e3 = _mm_unpackhi_epi16(a1, b1);
    __m128i f0 = _mm_unpacklo_epi16(c0, d0), f1 = _mm_unpackhi_epi16(c0, d0);
    __m128i f2 = _mm_unpacklo_epi16(c1, d1), f3 = _mm_unpackhi_epi16(c1, d1);
    g[0] = _mm_unpacklo_epi32(e0, f0), g[1] = _mm_unpackhi_epi32(e0, f0);
    g[2] = _mm_unpacklo_epi32(e1, f1), g[3] = _mm_unpackhi_epi32(e1, f1);
    g[4] = _mm_unpacklo_epi32(e2, f2), g[5] = _mm_unpackhi_epi32(e2, f2);
    g[6] = _mm_unpacklo_epi32(e3, f3), g[7] = _mm_unpackhi_epi32(e3, f3);
}

/* transpose8 on both u64 lanes. */
static inline __m128i transpose8_sse2(__m128i x) {
    __m128i t;
    t = _mm_and_si128(_mm_xor_si128(x, _mm_srli_epi64(x, 7)), _mm_set1_epi64x(0x00AA00AA00AA00AAll));
    x = _mm_xor_si128(_mm_xor_si128(x, t), _mm_slli_epi64(t, 7));
    t = _mm_and_si128(_mm_xor_si128(x, _mm_srli_epi64(x, 14)), _mm_set1_epi64x(0x0000CCCC0000CCCCll));
    x = _mm_xor_si128(_mm_xor_si128(x, t), _mm_slli_epi64(t, 14));
    t = _mm_and_si128(_mm_xor_si128(x, _mm_srli_epi64(x, 28)), _mm_set1_epi64x(0x00000000F0F0F0F0ll));
    return _mm_xor_si128(_mm_xor_si128(x, t), _mm_slli_epi64(t, 28));
}

/* Output bytes from..n (as many 128-byte blocks as fit); returns where it stopped. */
static size_t untranspose_sse2(const unsigned char *in, size_t stride, size_t from, size_t n, unsigned char *out) {
    size_t i = from;
    for (; i + 128 <= n; i += 128) {
        __m128i g[8];
        gather_planes(in + i / 8, stride, g);
        for (int k = 0; k < 8; k++) _mm_storeu_si128((__m128i *)(out + i + 16 * k), transpose8_sse2(g[k]));
    }
    return i;
}

/* transpose8 on all four u64 lanes. */
__attribute__((target("avx2"))) static inline __m256i transpose8_avx2(__m256i x) {
    __m256i t;
    t = _mm256_and_si256(_mm256_xor_si256(x, _mm256_srli_epi64(x, 7)), _mm256_set1_epi64x(0x00AA00AA00AA00AAll));
    x = _mm256_xor_si256(_mm256_xor_si256(x, t), _mm256_slli_epi64(t, 7));
    t = _mm256_and_si256(_mm256_xor_si256(x, _mm256_srli_epi64(x, 14)), _mm256_set1_epi64x(0x0000CCCC0000CCCCll));
    x = _mm256_xor_si256(_mm256_xor_si256(x, t), _mm256_slli_epi64(t, 14));
    t = _mm256_and_si256(_mm256_xor_si256(x, _mm256_srli_epi64(x, 28)), _mm256_set1_epi64x(0x00000000F0F0F0F0ll));
    return _mm256_xor_si256(_mm256_xor_si256(x, t), _mm256_slli_epi64(t, 28));
}

/* The 128-byte blocks as untranspose_sse2 (the bit transposes on two 128-bit lanes at once);
 * then, for 32 bytes at a time, each plane's 32 bits spread to 32 bytes (byte k gets bit k),
 * compared with the bit, and the plane's bit OR-ed into the result. */
__attribute__((target("avx2"))) static size_t untranspose_avx2(
    const unsigned char *in, size_t stride, size_t n, unsigned char *out) {
    size_t i = 0;
    for (; i + 128 <= n; i += 128) {
        __m128i g[8];
        gather_planes(in + i / 8, stride, g);
        for (int k = 0; k < 8; k += 2)
            _mm256_storeu_si256((__m256i *)(out + i + 16 * k), transpose8_avx2(_mm256_set_m128i(g[k + 1], g[k])));
    }
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3,
                                            3, 3, 3, 3, 3, 3, 3);
    const __m256i bits = _mm256_setr_epi8(1, 2, 4, 8, 16, 32, 64, (char)128, 1, 2, 4, 8, 16, 32, 64, (char)128, 1, 2,
                                          4, 8, 16, 32, 64, (char)128, 1, 2, 4, 8, 16, 32, 64, (char)128);
    for (; i + 32 <= n; i += 32) {
        __m256i acc = _mm256_setzero_si256();
        for (int b = 0; b < 8; b++) {
            uint32_t mask;
            memcpy(&mask, in + (size_t)b * stride + i / 8, 4);
            __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)mask), spread);
            v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bits), bits);
            acc = _mm256_or_si256(acc, _mm256_and_si256(v, _mm256_set1_epi8((char)(1 << b))));
        }
        _mm256_storeu_si256((__m256i *)(out + i), acc);
    }
    return i;
}
#endif

static void transpose(const unsigned char *in, size_t n, unsigned char *out, size_t stride, int impl) {
    size_t done = 0;
#if defined(__x86_64__)
    if (impl == CTK_IMPL_AVX2) done = transpose_avx2(in, n, out, stride);
    if (impl != CTK_IMPL_PORTABLE) done += transpose_sse2(in + done, n - done, out + done / 8, stride);
#endif
    transpose_portable(in, done, n, out, stride);
}

static void untranspose(const unsigned char *in, size_t stride, size_t n, unsigned char *out, int impl) {
    size_t done = 0;
#if defined(__x86_64__)
    if (impl == CTK_IMPL_AVX2) done = untranspose_avx2(in, stride, n, out);
    if (impl != CTK_IMPL_PORTABLE) done = untranspose_sse2(in, stride, done, n, out);
#endif
    untranspose_portable(in, stride, done, n, out);
}

int ctk_bitshuffle_with(const void *src, void *dst, size_t count, size_t width, int impl) {
    impl = ctk_lane_impl(impl);
    if (!impl) return 0;
    const unsigned char *s = src;
    unsigned char *d = dst;
    const size_t m = count - count % 8, stride = m / 8;
    unsigned char planes[BLOCK * 8];
    const size_t per = width <= 8 ? BLOCK : 8; /* elements per block that fit `planes` */
    for (size_t i = 0; i < m; i += per) {
        size_t k = m - i < per ? m - i : per;
        ctk_shuffle_with(s + i * width, planes, k, width, impl);
        for (size_t j = 0; j < width; j++) transpose(planes + j * k, k, d + j * 8 * stride + i / 8, stride, impl);
    }
    memcpy(d + m * width, s + m * width, (count - m) * width);
    return 1;
}

int ctk_bitunshuffle_with(const void *src, void *dst, size_t count, size_t width, int impl) {
    impl = ctk_lane_impl(impl);
    if (!impl) return 0;
    const unsigned char *s = src;
    unsigned char *d = dst;
    const size_t m = count - count % 8, stride = m / 8;
    unsigned char planes[BLOCK * 8];
    const size_t per = width <= 8 ? BLOCK : 8;
    for (size_t i = 0; i < m; i += per) {
        size_t k = m - i < per ? m - i : per;
        for (size_t j = 0; j < width; j++) untranspose(s + j * 8 * stride + i / 8, stride, k, planes + j * k, impl);
        ctk_unshuffle_with(planes, d + i * width, k, width, impl);
    }
    memcpy(d + m * width, s + m * width, (count - m) * width);
    return 1;
}

/* f32 values to the bit-shuffled elements of a 2-byte dtype, a block at a time: the fused
 * conversion and byte shuffle (`narrow`) into an L1-sized buffer, then the bit transposes; the
 * same bytes as converting, then ctk_bitshuffle with width 2. */
static void narrow_bitshuffled(const float *src, void *dst, size_t n,
                               void (*narrow)(const float *, void *, size_t),
                               void (*tail)(const float *, uint16_t *, size_t)) {
    unsigned char *d = dst;
    const size_t m = n - n % 8, stride = m / 8;
    const int impl = ctk_lane_impl(CTK_IMPL_AUTO);
    unsigned char planes[BLOCK * 2];
    for (size_t i = 0; i < m; i += BLOCK) {
        size_t k = m - i < BLOCK ? m - i : BLOCK;
        narrow(src + i, planes, k);
        transpose(planes, k, d + i / 8, stride, impl);
        transpose(planes + k, k, d + 8 * stride + i / 8, stride, impl);
    }
    uint16_t rest[8];
    tail(src + m, rest, n - m);
    memcpy(d + 2 * m, rest, 2 * (n - m));
}

/* The inverse: the bit transposes into an L1-sized buffer, then the fused unshuffle and
 * conversion (`widen`) into `dst`. */
static void bitshuffled_widen(const void *src, float *dst, size_t n, void (*widen)(const void *, float *, size_t),
                              void (*tail)(const uint16_t *, float *, size_t)) {
    const unsigned char *s = src;
    const size_t m = n - n % 8, stride = m / 8;
    const int impl = ctk_lane_impl(CTK_IMPL_AUTO);
    unsigned char planes[BLOCK * 2];
    for (size_t i = 0; i < m; i += BLOCK) {
        size_t k = m - i < BLOCK ? m - i : BLOCK;
        untranspose(s + i / 8, stride, k, planes, impl);
        untranspose(s + 8 * stride + i / 8, stride, k, planes + k, impl);
        widen(planes, dst + i, k);
    }
    uint16_t rest[8];
    memcpy(rest, s + 2 * m, 2 * (n - m));
    tail(rest, dst + m, n - m);
}

void ctk_f32_to_bf16_bitshuffled(const float *src, void *dst, size_t n) {
    narrow_bitshuffled(src, dst, n, ctk_f32_to_bf16_shuffled, ctk_f32_to_bf16);
}

void ctk_f32_to_f16_bitshuffled(const float *src, void *dst, size_t n) {
    narrow_bitshuffled(src, dst, n, ctk_f32_to_f16_shuffled, ctk_f32_to_f16);
}

void ctk_bf16_bitshuffled_to_f32(const void *src, float *dst, size_t n) {
    bitshuffled_widen(src, dst, n, ctk_bf16_shuffled_to_f32, ctk_bf16_to_f32);
}

void ctk_f16_bitshuffled_to_f32(const void *src, float *dst, size_t n) {
    bitshuffled_widen(src, dst, n, ctk_f16_shuffled_to_f32, ctk_f16_to_f32);
}

void ctk_bitshuffle(const void *src, void *dst, size_t count, size_t width) {
    ctk_bitshuffle_with(src, dst, count, width, CTK_IMPL_AUTO);
}

void ctk_bitunshuffle(const void *src, void *dst, size_t count, size_t width) {
    ctk_bitunshuffle_with(src, dst, count, width, CTK_IMPL_AUTO);
}
