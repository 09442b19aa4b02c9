// aarch64 NEON kernels, one row at a time: int8 via widening multiplies (vmull_s8) and pairwise
// accumulation into int32 (exact), fp16 via vcvt_f32_f16, fp32 via vfmaq_f32. Compiled only on
// aarch64 (baseline ARMv8-A, no dotprod extension required).
#pragma once

#include <arm_neon.h>

#include <cstdint>

#include "facecore/serial.h"

namespace facecore {
namespace neon {

static inline int32_t dot_i8_one(const int8_t* a, const int8_t* b, size_t d) {
    int32x4_t acc = vdupq_n_s32(0);
    size_t c = 0;
    for (; c + 16 <= d; c += 16) {
        const int8x16_t x = vld1q_s8(a + c), y = vld1q_s8(b + c);
        acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(x), vget_low_s8(y)));
        acc = vpadalq_s16(acc, vmull_high_s8(x, y));
    }
    return vaddvq_s32(acc) + serial::dot_i8_one(a + c, b + c, d - c);
}

static inline float dot_f16_one(const uint16_t* a, const float* b, size_t d) {
    float32x4_t acc = vdupq_n_f32(0.f);
    size_t c = 0;
    for (; c + 4 <= d; c += 4)
        acc = vfmaq_f32(acc, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(a + c))), vld1q_f32(b + c));
    return vaddvq_f32(acc) + serial::dot_f16_one(a + c, b + c, d - c);
}

static inline float dot_f32_one(const float* a, const float* b, size_t d) {
    float32x4_t acc = vdupq_n_f32(0.f);
    size_t c = 0;
    for (; c + 4 <= d; c += 4) acc = vfmaq_f32(acc, vld1q_f32(a + c), vld1q_f32(b + c));
    return vaddvq_f32(acc) + serial::dot_f32_one(a + c, b + c, d - c);
}

}  // namespace neon
}  // namespace facecore
