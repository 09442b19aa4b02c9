// AVX-512 fp16 and fp32 tiles: halves widened with vcvtph2ps, fp32 FMA accumulation. Masked
// loads cover the tail of d.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace facecore {
namespace avx512 {

static inline __m128 reduce4_ps(__m512 a, __m512 b, __m512 c, __m512 d) {
    const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    const __m512d abd = _mm512_castps_pd(ab), cdd = _mm512_castps_pd(cd);
    const __m512 abcd = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(abd, cdd)),
                                      _mm512_castpd_ps(_mm512_unpackhi_pd(abd, cdd)));
    const __m256 s = _mm256_add_ps(_mm512_castps512_ps256(abcd),
                                   _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(abcd), 1)));
    return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

static inline __mmask16 tail_mask16(size_t r) { return r >= 16 ? __mmask16(0xffff) : __mmask16((1u << r) - 1); }

static inline __m512 load_row(const uint16_t* p, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}
static inline __m512 load_row(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }

// Row is uint16_t (fp16 bit patterns) or float.
template <class Row>
struct TileF {
    static int aux(const float*, size_t) { return 0; }

    template <int QN>
    static void run(const Row* const r[4], const float* q, size_t d, const int*, float res[][4]) {
        __m512 acc[QN][4];
        for (int j = 0; j < QN; ++j)
            for (int t = 0; t < 4; ++t) acc[j][t] = _mm512_setzero_ps();
        for (size_t c = 0; c < d; c += 16) {
            const __mmask16 m = tail_mask16(d - c);
            __m512 x[4];
            for (int t = 0; t < 4; ++t) x[t] = load_row(r[t] + c, m);
            for (int j = 0; j < QN; ++j) {
                const __m512 qv = _mm512_maskz_loadu_ps(m, q + j * d + c);
                for (int t = 0; t < 4; ++t) acc[j][t] = _mm512_fmadd_ps(x[t], qv, acc[j][t]);
            }
        }
        for (int j = 0; j < QN; ++j)
            _mm_storeu_ps(res[j], reduce4_ps(acc[j][0], acc[j][1], acc[j][2], acc[j][3]));
    }
};

}  // namespace avx512
}  // namespace facecore
