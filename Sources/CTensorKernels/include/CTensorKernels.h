#ifndef CTENSORKERNELS_H
#define CTENSORKERNELS_H
#include <stddef.h>
#include <stdint.h>

/// CRC-32C (Castagnoli), as used by iSCSI and ext4: `crc` is the running value (start with 0).
/// Uses the SSE4.2 instruction where the CPU has it, a table otherwise.
uint32_t ctk_crc32c(uint32_t crc, const void *data, size_t length);

/// The paths ctk_crc32c chooses from, for tests and benchmarks: AUTO is ctk_crc32c's choice;
/// TABLE the portable one; CHAINS three chains of the SSE4.2 crc32 instruction; FOLD128,
/// FOLD256 and FOLD512 carry-less multiplication folding (PCLMULQDQ, then VPCLMULQDQ on 256 and
/// 512 bits); FOLD256_CHAINS the 256-bit folding and three crc32 chains in one loop.
enum {
    CTK_CRC_AUTO = 0,
    CTK_CRC_TABLE = 1,
    CTK_CRC_CHAINS = 2,
    CTK_CRC_FOLD128 = 3,
    CTK_CRC_FOLD256 = 4,
    CTK_CRC_FOLD256_CHAINS = 5,
    CTK_CRC_FOLD512 = 6
};
/// 1 when `path` runs on this CPU.
int ctk_crc32c_path_available(int path);
/// ctk_crc32c through one path: updates `*crc` and returns 1, or returns 0 (and leaves `*crc`)
/// when the path is not available here.
int ctk_crc32c_with(uint32_t *crc, const void *data, size_t length, int path);

/// Byte shuffle (Blosc's filter): byte j of element i moves to j * count + i. SIMD for element
/// sizes 2 and 4 (AVX2 where the CPU has it, SSE2 otherwise); any size works.
void ctk_shuffle(const void *src, void *dst, size_t count, size_t elementSize);
/// The inverse of ctk_shuffle.
void ctk_unshuffle(const void *src, void *dst, size_t count, size_t elementSize);

/// Bit shuffle (docs/wire-format.md, "Codecs"): of `count` elements of `width` bytes, the first
/// count - count % 8 go to 8 * width bit planes (plane (j, b): bit b of byte j of each element,
/// element i at bit i % 8 of byte i / 8), the rest follow as they are. AVX2 where the CPU has it.
void ctk_bitshuffle(const void *src, void *dst, size_t count, size_t width);
/// The inverse of ctk_bitshuffle.
void ctk_bitunshuffle(const void *src, void *dst, size_t count, size_t width);

/// The conversion and the bit shuffle in one pass (the same bytes as converting, then
/// ctk_bitshuffle with width 2), and back.
void ctk_f32_to_bf16_bitshuffled(const float *src, void *dst, size_t n);
void ctk_f32_to_f16_bitshuffled(const float *src, void *dst, size_t n);
void ctk_bf16_bitshuffled_to_f32(const void *src, float *dst, size_t n);
void ctk_f16_bitshuffled_to_f32(const void *src, float *dst, size_t n);

/// f32 -> bf16, round to nearest even; a NaN stays a NaN (quiet bit set). See docs/wire-format.md.
void ctk_f32_to_bf16(const float *src, uint16_t *dst, size_t n);
/// bf16 -> f32 (exact: the 16 bits become the top half).
void ctk_bf16_to_f32(const uint16_t *src, float *dst, size_t n);
/// f32 -> IEEE f16, round to nearest even, as F16C does (overflow to infinity, subnormals kept).
void ctk_f32_to_f16(const float *src, uint16_t *dst, size_t n);
/// IEEE f16 -> f32 (exact; a NaN gets the quiet bit).
void ctk_f16_to_f32(const uint16_t *src, float *dst, size_t n);

/// The 2-byte elements at src split into a plane of low bytes and one of high bytes (n each), and
/// back: ctk_shuffle and ctk_unshuffle with width 2 when high = low + n.
void ctk_split2(const void *src, void *low, void *high, size_t n);
void ctk_join2(const void *low, const void *high, void *dst, size_t n);

/// The conversion and the width-2 shuffle in one pass (the same bits as one after the other):
/// f32 -> bf16/f16 planes (2n bytes at dst), and planes -> f32.
void ctk_f32_to_bf16_shuffled(const float *src, void *dst, size_t n);
void ctk_f32_to_f16_shuffled(const float *src, void *dst, size_t n);
void ctk_bf16_shuffled_to_f32(const void *src, float *dst, size_t n);
void ctk_f16_shuffled_to_f32(const void *src, float *dst, size_t n);

/// Implementations of the shuffle and conversion kernels, for tests and benchmarks: AUTO picks
/// the fastest the CPU has. Shuffles and bf16 have PORTABLE, SSE2 (x86-64) and AVX2; f16 has
/// PORTABLE and F16C.
enum { CTK_IMPL_AUTO = 0, CTK_IMPL_PORTABLE = 1, CTK_IMPL_SSE2 = 2, CTK_IMPL_AVX2 = 3, CTK_IMPL_F16C = 4 };
/// 1 when `impl` runs on this CPU.
int ctk_impl_available(int impl);
/// The kernels above through one implementation; 0 (and nothing written) when `impl` is not
/// available or not one of that kernel's.
int ctk_shuffle_with(const void *src, void *dst, size_t count, size_t elementSize, int impl);
int ctk_unshuffle_with(const void *src, void *dst, size_t count, size_t elementSize, int impl);
int ctk_bitshuffle_with(const void *src, void *dst, size_t count, size_t width, int impl);
int ctk_bitunshuffle_with(const void *src, void *dst, size_t count, size_t width, int impl);
int ctk_f32_to_bf16_with(const float *src, uint16_t *dst, size_t n, int impl);
int ctk_bf16_to_f32_with(const uint16_t *src, float *dst, size_t n, int impl);
int ctk_f32_to_f16_with(const float *src, uint16_t *dst, size_t n, int impl);
int ctk_f16_to_f32_with(const uint16_t *src, float *dst, size_t n, int impl);

/// Error feedback for a push of dtype bf16 (`dtype` 2) or f16 (1): v = g + r (v = g when r is
/// NULL), q = v rounded to the dtype, as f32 values, and r_out = v - q, element by element in
/// one pass. r_out may be r.
void ctk_error_feedback(const float *g, const float *r, float *q, float *r_out, size_t n, int dtype);

/// dst[i] += src[i] for i < n.
void ctk_add_f32(float *dst, const float *src, size_t n);

/// dst[i] += src[i] for i < n (the same sums as ctk_add_f32), and in the same pass checks src:
/// returns 1 when every src[i] is finite, 0 when any is NaN or infinite (dst is updated anyway).
int ctk_add_f32_finite(float *dst, const float *src, size_t n);

/// 1 when every src[i], i < n, is finite; 0 when any is NaN or infinite.
int ctk_all_finite_f32(const float *src, size_t n);

/// The index of the first src[i] that is NaN or infinite, or n when all are finite.
size_t ctk_first_nonfinite_f32(const float *src, size_t n);
#endif
