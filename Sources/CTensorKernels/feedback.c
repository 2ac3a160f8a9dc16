#include "CTensorKernels.h"

/* Error feedback for a bf16 or f16 push, in one pass over blocks that stay in L1:
 * v = g + r, q = v rounded to the dtype (as f32), r_out = v - q. Each is one IEEE f32 operation
 * per element (no multiplication, so nothing to contract), the same bits as doing the steps one
 * after the other over the whole arrays. Without r, v is g itself (not g + 0, which would turn a
 * -0 into +0). r_out may be r. */
enum { FEEDBACK_BLOCK = 2048 };

void ctk_error_feedback(const float *g, const float *r, float *q, float *r_out, size_t n, int dtype) {
    uint16_t narrow[FEEDBACK_BLOCK];
    float v[FEEDBACK_BLOCK];
    for (size_t i = 0; i < n; i += FEEDBACK_BLOCK) {
        size_t k = n - i < FEEDBACK_BLOCK ? n - i : FEEDBACK_BLOCK;
        if (r) {
            for (size_t j = 0; j < k; j++) v[j] = g[i + j] + r[i + j];
        } else {
            for (size_t j = 0; j < k; j++) v[j] = g[i + j];
        }
        if (dtype == 2) {
            ctk_f32_to_bf16(v, narrow, k);
            ctk_bf16_to_f32(narrow, q + i, k);
        } else {
            ctk_f32_to_f16(v, narrow, k);
            ctk_f16_to_f32(narrow, q + i, k);
        }
        for (size_t j = 0; j < k; j++) r_out[i + j] = v[j] - q[i + j];
    }
}
