// Portable reference kernels: plain loops, sequential accumulation. Always compiled; every SIMD
// level is tested against these.
#pragma once

#include <cstring>

#include "facecore/kernels.h"

namespace facecore {
namespace serial {

// IEEE binary16 -> binary32, exact for every input (subnormals, infinities, NaN payloads).
static inline float half_to_float(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else {  // subnormal: normalise
        exp = 113;
        while ((mant & 0x400u) == 0) {
            mant <<= 1;
            --exp;
        }
        bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

static inline int32_t dot_i8_one(const int8_t* a, const int8_t* b, size_t d) {
    int32_t s = 0;
    for (size_t c = 0; c < d; ++c) s += int32_t(a[c]) * int32_t(b[c]);
    return s;
}

static inline float dot_f16_one(const uint16_t* a, const float* b, size_t d) {
    float s = 0.f;
    for (size_t c = 0; c < d; ++c) s += half_to_float(a[c]) * b[c];
    return s;
}

static inline float dot_f32_one(const float* a, const float* b, size_t d) {
    float s = 0.f;
    for (size_t c = 0; c < d; ++c) s += a[c] * b[c];
    return s;
}

}  // namespace serial
}  // namespace facecore
