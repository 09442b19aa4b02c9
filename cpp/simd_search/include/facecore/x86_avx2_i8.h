// AVX2 int8 tile: bytes sign-extended to int16 (vpmovsxbw) and multiplied pairwise into int32
// (vpmaddwd), which cannot saturate, so sums are exact. d % 16 is finished with scalar code.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "facecore/serial.h"

namespace facecore {
namespace avx2 {

static inline __m128i reduce4_epi32(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i abcd = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
    return _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
}

struct TileI8 {
    static int aux(const int8_t*, size_t) { return 0; }

    template <int QN>
    static void run(const int8_t* const r[4], const int8_t* q, size_t d, const int*,
                    int32_t res[][4]) {
        __m256i acc[QN][4];
        for (int j = 0; j < QN; ++j)
            for (int t = 0; t < 4; ++t) acc[j][t] = _mm256_setzero_si256();
        const size_t body = d & ~size_t(15);
        for (size_t c = 0; c < body; c += 16) {
            __m256i x[4];
            for (int t = 0; t < 4; ++t)
                x[t] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r[t] + c)));
            for (int j = 0; j < QN; ++j) {
                const __m256i qv = _mm256_cvtepi8_epi16(
                    _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + j * d + c)));
                for (int t = 0; t < 4; ++t)
                    acc[j][t] = _mm256_add_epi32(acc[j][t], _mm256_madd_epi16(x[t], qv));
            }
        }
        for (int j = 0; j < QN; ++j) {
            _mm_storeu_si128(reinterpret_cast<__m128i*>(res[j]),
                             reduce4_epi32(acc[j][0], acc[j][1], acc[j][2], acc[j][3]));
            if (body < d)
                for (int t = 0; t < 4; ++t)
                    res[j][t] += serial::dot_i8_one(r[t] + body, q + j * d + body, d - body);
        }
    }
};

}  // namespace avx2
}  // namespace facecore
