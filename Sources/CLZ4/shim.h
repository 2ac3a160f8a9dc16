#ifndef CLZ4_SHIM_H
#define CLZ4_SHIM_H
#include <lz4.h>

/// void* wrappers so Swift can pass raw buffers without rebinding memory.
static inline int clz4_compress(const void *src, void *dst, int srcSize, int dstCapacity) {
    return LZ4_compress_default((const char *)src, (char *)dst, srcSize, dstCapacity);
}
/// `acceleration` 1 is LZ4_compress_default; larger values trade ratio for speed.
static inline int clz4_compress_fast(const void *src, void *dst, int srcSize, int dstCapacity, int acceleration) {
    return LZ4_compress_fast((const char *)src, (char *)dst, srcSize, dstCapacity, acceleration);
}
static inline int clz4_decompress_safe(const void *src, void *dst, int srcSize, int dstCapacity) {
    return LZ4_decompress_safe((const char *)src, (char *)dst, srcSize, dstCapacity);
}
static inline int clz4_compress_bound(int size) { return LZ4_compressBound(size); }
#endif
