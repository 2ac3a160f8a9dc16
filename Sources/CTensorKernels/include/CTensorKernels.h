#ifndef CTENSORKERNELS_H
#define CTENSORKERNELS_H
#include <stddef.h>
#include <stdint.h>

/// CRC-32C (Castagnoli), as used by iSCSI and ext4: `crc` is the running value (start with 0).
/// Uses the SSE4.2 instruction where the CPU has it, a table otherwise.
uint32_t ctk_crc32c(uint32_t crc, const void *data, size_t length);

/// Byte shuffle (Blosc's filter): byte j of element i moves to j * count + i.
void ctk_shuffle(const void *src, void *dst, size_t count, size_t elementSize);
/// The inverse of ctk_shuffle.
void ctk_unshuffle(const void *src, void *dst, size_t count, size_t elementSize);

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
