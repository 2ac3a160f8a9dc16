#ifndef CTK_SIMD_H
#define CTK_SIMD_H
#include "CTensorKernels.h"

/* What the CPU offers the shuffle and conversion kernels, detected once (SSE2 is part of
 * x86-64, so it needs no check). __builtin_cpu_supports also checks that the OS saves the YMM
 * state. */
enum { CTK_CPU_AVX2 = 1, CTK_CPU_F16C = 2 };

static inline int ctk_cpu_simd(void) {
#if defined(__x86_64__)
    static int cached = -1;
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
        v = 0;
        if (__builtin_cpu_supports("avx2")) v |= CTK_CPU_AVX2;
        if (__builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c")) v |= CTK_CPU_F16C;
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
#else
    return 0;
#endif
}

/* The path of a kernel with portable, SSE2 and AVX2 versions (the byte shuffles, the bf16
 * conversions): AUTO is the fastest the CPU has; 0 when `impl` is not available here or is not
 * one of those (F16C). */
static inline int ctk_lane_impl(int impl) {
    if (impl == CTK_IMPL_AUTO) {
        if (ctk_cpu_simd() & CTK_CPU_AVX2) return CTK_IMPL_AVX2;
#if defined(__x86_64__)
        return CTK_IMPL_SSE2;
#else
        return CTK_IMPL_PORTABLE;
#endif
    }
    return impl != CTK_IMPL_F16C && ctk_impl_available(impl) ? impl : 0;
}
#endif
