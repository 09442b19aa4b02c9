// AVX2 fp16 and fp32 tiles: halves widened with F16C (vcvtph2ps), FMA accumulation in fp32.
// d % 8 is finished with scalar code.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "facecore/serial.h"

namespace facecore {
namespace avx2 {

static inline __m128 reduce4_ps(__m256 a, __m256 b, __m256 c, __m256 d) {
    const __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

static inline __m256 load8(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
static inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }

static inline float dot_tail(const uint16_t* a, const float* b, size_t n) { return serial::dot_f16_one(a, b, n); }
static inline float dot_tail(const float* a, const float* b, size_t n) { return serial::dot_f32_one(a, b, n); }

template <class Row>
struct TileF {
    static int aux(const float*, size_t) { return 0; }

    template <int QN>
    static void run(const Row* const r[4], const float* q, size_t d, const int*, float res[][4]) {
        __m256 acc[QN][4];
        for (int j = 0; j < QN; ++j)
            for (int t = 0; t < 4; ++t) acc[j][t] = _mm256_setzero_ps();
        const size_t body = d & ~size_t(7);
        for (size_t c = 0; c < body; c += 8) {
            __m256 x[4];
            for (int t = 0; t < 4; ++t) x[t] = load8(r[t] + c);
            for (int j = 0; j < QN; ++j) {
                const __m256 qv = _mm256_loadu_ps(q + j * d + c);
                for (int t = 0; t < 4; ++t) acc[j][t] = _mm256_fmadd_ps(x[t], qv, acc[j][t]);
            }
        }
        for (int j = 0; j < QN; ++j) {
            _mm_storeu_ps(res[j], reduce4_ps(acc[j][0], acc[j][1], acc[j][2], acc[j][3]));
            if (body < d)
                for (int t = 0; t < 4; ++t) res[j][t] += dot_tail(r[t] + body, q + j * d + body, d - body);
        }
    }
};

}  // namespace avx2
}  // namespace facecore
