#include "simd.h"

/* Byte shuffle (Blosc's filter): byte j of element i moves to j * count + i, so that the bytes
 * of one significance (the exponents, the low mantissa bytes) lie together and LZ4 finds their
 * runs. Widths 2 and 4 have SIMD paths; any width has the portable loops, which also finish the
 * elements the SIMD loops leave over. */

static void shuffle_portable(const unsigned char *s, unsigned char *d, size_t from, size_t count, size_t w) {
    if (w == 2) {
        for (size_t i = from; i < count; i++) {
            d[i] = s[2 * i];
            d[count + i] = s[2 * i + 1];
        }
    } else if (w == 4) {
        unsigned char *d0 = d, *d1 = d + count, *d2 = d + 2 * count, *d3 = d + 3 * count;
        for (size_t i = from; i < count; i++) {
            d0[i] = s[4 * i];
            d1[i] = s[4 * i + 1];
            d2[i] = s[4 * i + 2];
            d3[i] = s[4 * i + 3];
        }
    } else {
        for (size_t i = from; i < count; i++)
            for (size_t j = 0; j < w; j++) d[j * count + i] = s[i * w + j];
    }
}

static void unshuffle_portable(const unsigned char *s, unsigned char *d, size_t from, size_t count, size_t w) {
    if (w == 2) {
        for (size_t i = from; i < count; i++) {
            d[2 * i] = s[i];
            d[2 * i + 1] = s[count + i];
        }
    } else if (w == 4) {
        const unsigned char *s0 = s, *s1 = s + count, *s2 = s + 2 * count, *s3 = s + 3 * count;
        for (size_t i = from; i < count; i++) {
            d[4 * i] = s0[i];
            d[4 * i + 1] = s1[i];
            d[4 * i + 2] = s2[i];
            d[4 * i + 3] = s3[i];
        }
    } else {
        for (size_t i = from; i < count; i++)
            for (size_t j = 0; j < w; j++) d[i * w + j] = s[j * count + i];
    }
}

#if defined(__x86_64__)
#include <immintrin.h>

/* Each returns how many elements it did (a multiple of its block); the caller finishes the rest. */

static size_t shuffle2_sse2(const unsigned char *s, unsigned char *d0, unsigned char *d1, size_t count) {
    const __m128i lo = _mm_set1_epi16(0x00FF);
    size_t i = 0;
    for (; i + 16 <= count; i += 16) {
        __m128i x0 = _mm_loadu_si128((const __m128i *)(s + 2 * i));
        __m128i x1 = _mm_loadu_si128((const __m128i *)(s + 2 * i + 16));
        _mm_storeu_si128((__m128i *)(d0 + i), _mm_packus_epi16(_mm_and_si128(x0, lo), _mm_and_si128(x1, lo)));
        _mm_storeu_si128((__m128i *)(d1 + i), _mm_packus_epi16(_mm_srli_epi16(x0, 8), _mm_srli_epi16(x1, 8)));
    }
    return i;
}

static size_t unshuffle2_sse2(const unsigned char *s0, const unsigned char *s1, unsigned char *d, size_t count) {
    size_t i = 0;
    for (; i + 16 <= count; i += 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)(s0 + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(s1 + i));
        _mm_storeu_si128((__m128i *)(d + 2 * i), _mm_unpacklo_epi8(a, b));
        _mm_storeu_si128((__m128i *)(d + 2 * i + 16), _mm_unpackhi_epi8(a, b));
    }
    return i;
}

/* Hides a vector from the compiler's shuffle combiner: without it clang merges the interleave
 * rounds below into a longer sequence of word shuffles that runs at a sixth of the speed. */
#define OPAQUE(v) __asm__("" : "+x"(v))

/* 16 elements: a 16 x 4 byte transpose in three rounds of byte interleaves and one of 64-bit. */
static size_t shuffle4_sse2(const unsigned char *s, unsigned char *d, size_t count) {
    size_t i = 0;
    for (; i + 16 <= count; i += 16) {
        const unsigned char *p = s + 4 * i;
        __m128i x0 = _mm_loadu_si128((const __m128i *)p), x1 = _mm_loadu_si128((const __m128i *)(p + 16));
        __m128i x2 = _mm_loadu_si128((const __m128i *)(p + 32)), x3 = _mm_loadu_si128((const __m128i *)(p + 48));
        __m128i t0 = _mm_unpacklo_epi8(x0, x1), t1 = _mm_unpackhi_epi8(x0, x1);
        __m128i t2 = _mm_unpacklo_epi8(x2, x3), t3 = _mm_unpackhi_epi8(x2, x3);
        OPAQUE(t0);
        OPAQUE(t1);
        OPAQUE(t2);
        OPAQUE(t3);
        __m128i u0 = _mm_unpacklo_epi8(t0, t1), u1 = _mm_unpackhi_epi8(t0, t1);
        __m128i u2 = _mm_unpacklo_epi8(t2, t3), u3 = _mm_unpackhi_epi8(t2, t3);
        OPAQUE(u0);
        OPAQUE(u1);
        OPAQUE(u2);
        OPAQUE(u3);
        __m128i v0 = _mm_unpacklo_epi8(u0, u1), v1 = _mm_unpackhi_epi8(u0, u1);
        __m128i v2 = _mm_unpacklo_epi8(u2, u3), v3 = _mm_unpackhi_epi8(u2, u3);
        _mm_storeu_si128((__m128i *)(d + i), _mm_unpacklo_epi64(v0, v2));
        _mm_storeu_si128((__m128i *)(d + count + i), _mm_unpackhi_epi64(v0, v2));
        _mm_storeu_si128((__m128i *)(d + 2 * count + i), _mm_unpacklo_epi64(v1, v3));
        _mm_storeu_si128((__m128i *)(d + 3 * count + i), _mm_unpackhi_epi64(v1, v3));
    }
    return i;
}

static size_t unshuffle4_sse2(const unsigned char *s, unsigned char *d, size_t count) {
    size_t i = 0;
    for (; i + 16 <= count; i += 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)(s + i)), b = _mm_loadu_si128((const __m128i *)(s + count + i));
        __m128i c = _mm_loadu_si128((const __m128i *)(s + 2 * count + i));
        __m128i e = _mm_loadu_si128((const __m128i *)(s + 3 * count + i));
        __m128i s0 = _mm_unpacklo_epi8(a, b), s1 = _mm_unpackhi_epi8(a, b);
        __m128i s2 = _mm_unpacklo_epi8(c, e), s3 = _mm_unpackhi_epi8(c, e);
        unsigned char *q = d + 4 * i;
        _mm_storeu_si128((__m128i *)q, _mm_unpacklo_epi16(s0, s2));
        _mm_storeu_si128((__m128i *)(q + 16), _mm_unpackhi_epi16(s0, s2));
        _mm_storeu_si128((__m128i *)(q + 32), _mm_unpacklo_epi16(s1, s3));
        _mm_storeu_si128((__m128i *)(q + 48), _mm_unpackhi_epi16(s1, s3));
    }
    return i;
}

#define AVX2 __attribute__((target("avx2")))

AVX2 static size_t shuffle2_avx2(const unsigned char *s, unsigned char *d0, unsigned char *d1, size_t count) {
    const __m256i lo = _mm256_set1_epi16(0x00FF);
    size_t i = 0;
    for (; i + 32 <= count; i += 32) {
        __m256i x0 = _mm256_loadu_si256((const __m256i *)(s + 2 * i));
        __m256i x1 = _mm256_loadu_si256((const __m256i *)(s + 2 * i + 32));
        /* packus works within 128-bit lanes; the permute puts the four quarters in order. */
        __m256i a = _mm256_packus_epi16(_mm256_and_si256(x0, lo), _mm256_and_si256(x1, lo));
        __m256i b = _mm256_packus_epi16(_mm256_srli_epi16(x0, 8), _mm256_srli_epi16(x1, 8));
        _mm256_storeu_si256((__m256i *)(d0 + i), _mm256_permute4x64_epi64(a, 0xD8));
        _mm256_storeu_si256((__m256i *)(d1 + i), _mm256_permute4x64_epi64(b, 0xD8));
    }
    return i;
}

AVX2 static size_t unshuffle2_avx2(const unsigned char *s0, const unsigned char *s1, unsigned char *d, size_t count) {
    size_t i = 0;
    for (; i + 32 <= count; i += 32) {
        __m256i a = _mm256_permute4x64_epi64(_mm256_loadu_si256((const __m256i *)(s0 + i)), 0xD8);
        __m256i b = _mm256_permute4x64_epi64(_mm256_loadu_si256((const __m256i *)(s1 + i)), 0xD8);
        _mm256_storeu_si256((__m256i *)(d + 2 * i), _mm256_unpacklo_epi8(a, b));
        _mm256_storeu_si256((__m256i *)(d + 2 * i + 32), _mm256_unpackhi_epi8(a, b));
    }
    return i;
}

/* 32 elements: within each 128-bit lane a byte shuffle groups each element's bytes by
 * significance, a dword permute collects 8 bytes of each plane per register, and 64-bit
 * interleaves and lane permutes assemble 32 bytes of each plane. */
AVX2 static size_t shuffle4_avx2(const unsigned char *s, unsigned char *d, size_t count) {
    const __m256i group = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, 0, 4, 8, 12, 1, 5, 9,
                                           13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    size_t i = 0;
    for (; i + 32 <= count; i += 32) {
        const unsigned char *p = s + 4 * i;
        __m256i r0 = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)p), group), order);
        __m256i r1 = _mm256_permutevar8x32_epi32(
            _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(p + 32)), group), order);
        __m256i r2 = _mm256_permutevar8x32_epi32(
            _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(p + 64)), group), order);
        __m256i r3 = _mm256_permutevar8x32_epi32(
            _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(p + 96)), group), order);
        /* r_k: qwords = plane 0, 1, 2, 3 of elements 8k..8k+7. */
        __m256i ac01 = _mm256_unpacklo_epi64(r0, r1), bd01 = _mm256_unpackhi_epi64(r0, r1);
        __m256i ac23 = _mm256_unpacklo_epi64(r2, r3), bd23 = _mm256_unpackhi_epi64(r2, r3);
        _mm256_storeu_si256((__m256i *)(d + i), _mm256_permute2x128_si256(ac01, ac23, 0x20));
        _mm256_storeu_si256((__m256i *)(d + count + i), _mm256_permute2x128_si256(bd01, bd23, 0x20));
        _mm256_storeu_si256((__m256i *)(d + 2 * count + i), _mm256_permute2x128_si256(ac01, ac23, 0x31));
        _mm256_storeu_si256((__m256i *)(d + 3 * count + i), _mm256_permute2x128_si256(bd01, bd23, 0x31));
    }
    return i;
}

AVX2 static size_t unshuffle4_avx2(const unsigned char *s, unsigned char *d, size_t count) {
    size_t i = 0;
    for (; i + 32 <= count; i += 32) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(s + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(s + count + i));
        __m256i c = _mm256_loadu_si256((const __m256i *)(s + 2 * count + i));
        __m256i e = _mm256_loadu_si256((const __m256i *)(s + 3 * count + i));
        __m256i s0 = _mm256_unpacklo_epi8(a, b), s1 = _mm256_unpackhi_epi8(a, b);
        __m256i s2 = _mm256_unpacklo_epi8(c, e), s3 = _mm256_unpackhi_epi8(c, e);
        /* Lane 0 holds elements 0-15, lane 1 elements 16-31. */
        __m256i o0 = _mm256_unpacklo_epi16(s0, s2), o1 = _mm256_unpackhi_epi16(s0, s2);
        __m256i o2 = _mm256_unpacklo_epi16(s1, s3), o3 = _mm256_unpackhi_epi16(s1, s3);
        unsigned char *q = d + 4 * i;
        _mm256_storeu_si256((__m256i *)q, _mm256_permute2x128_si256(o0, o1, 0x20));
        _mm256_storeu_si256((__m256i *)(q + 32), _mm256_permute2x128_si256(o2, o3, 0x20));
        _mm256_storeu_si256((__m256i *)(q + 64), _mm256_permute2x128_si256(o0, o1, 0x31));
        _mm256_storeu_si256((__m256i *)(q + 96), _mm256_permute2x128_si256(o2, o3, 0x31));
    }
    return i;
}
#endif

int ctk_shuffle_with(const void *src, void *dst, size_t count, size_t elementSize, int impl) {
    const unsigned char *s = src;
    unsigned char *d = dst;
    impl = ctk_lane_impl(impl);
    if (!impl) return 0;
    size_t done = 0;
#if defined(__x86_64__)
    if (impl == CTK_IMPL_AVX2 && elementSize == 2) done = shuffle2_avx2(s, d, d + count, count);
    if (impl == CTK_IMPL_AVX2 && elementSize == 4) done = shuffle4_avx2(s, d, count);
    if (impl == CTK_IMPL_SSE2 && elementSize == 2) done = shuffle2_sse2(s, d, d + count, count);
    if (impl == CTK_IMPL_SSE2 && elementSize == 4) done = shuffle4_sse2(s, d, count);
#endif
    shuffle_portable(s, d, done, count, elementSize);
    return 1;
}

int ctk_unshuffle_with(const void *src, void *dst, size_t count, size_t elementSize, int impl) {
    const unsigned char *s = src;
    unsigned char *d = dst;
    impl = ctk_lane_impl(impl);
    if (!impl) return 0;
    size_t done = 0;
#if defined(__x86_64__)
    if (impl == CTK_IMPL_AVX2 && elementSize == 2) done = unshuffle2_avx2(s, s + count, d, count);
    if (impl == CTK_IMPL_AVX2 && elementSize == 4) done = unshuffle4_avx2(s, d, count);
    if (impl == CTK_IMPL_SSE2 && elementSize == 2) done = unshuffle2_sse2(s, s + count, d, count);
    if (impl == CTK_IMPL_SSE2 && elementSize == 4) done = unshuffle4_sse2(s, d, count);
#endif
    unshuffle_portable(s, d, done, count, elementSize);
    return 1;
}

void ctk_shuffle(const void *src, void *dst, size_t count, size_t elementSize) {
    ctk_shuffle_with(src, dst, count, elementSize, CTK_IMPL_AUTO);
}

void ctk_unshuffle(const void *src, void *dst, size_t count, size_t elementSize) {
    ctk_unshuffle_with(src, dst, count, elementSize, CTK_IMPL_AUTO);
}

int ctk_impl_available(int impl) {
    switch (impl) {
    case CTK_IMPL_AUTO:
    case CTK_IMPL_PORTABLE: return 1;
#if defined(__x86_64__)
    case CTK_IMPL_SSE2: return 1;
#endif
    case CTK_IMPL_AVX2: return (ctk_cpu_simd() & CTK_CPU_AVX2) != 0;
    case CTK_IMPL_F16C: return (ctk_cpu_simd() & CTK_CPU_F16C) != 0;
    default: return 0;
    }
}

/* Two-byte elements to and from planes at any distance (the fused conversions below work on
 * blocks of a longer array, whose planes lie `count` bytes apart). */
void ctk_split2(const void *src, void *low, void *high, size_t n) {
    const unsigned char *s = src;
    unsigned char *d0 = low, *d1 = high;
    size_t i = 0;
#if defined(__x86_64__)
    i = (ctk_cpu_simd() & CTK_CPU_AVX2) ? shuffle2_avx2(s, d0, d1, n) : shuffle2_sse2(s, d0, d1, n);
#endif
    for (; i < n; i++) {
        d0[i] = s[2 * i];
        d1[i] = s[2 * i + 1];
    }
}

void ctk_join2(const void *low, const void *high, void *dst, size_t n) {
    const unsigned char *s0 = low, *s1 = high;
    unsigned char *d = dst;
    size_t i = 0;
#if defined(__x86_64__)
    i = (ctk_cpu_simd() & CTK_CPU_AVX2) ? unshuffle2_avx2(s0, s1, d, n) : unshuffle2_sse2(s0, s1, d, n);
#endif
    for (; i < n; i++) {
        d[2 * i] = s0[i];
        d[2 * i + 1] = s1[i];
    }
}
