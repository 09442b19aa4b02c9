// AVX-512 VNNI int8 tile. vpdpbusd multiplies unsigned by signed bytes, so rows are flipped to
// unsigned on load (x ^ 0x80 == x + 128) and 128 * sum(q) is subtracted once per query: the
// result is the exact signed dot product. Masked loads cover d % 64 (masked q lanes are 0).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace facecore {
namespace avx512 {

static inline __m128i reduce4_epi32(__m512i a, __m512i b, __m512i c, __m512i d) {
    const __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
    const __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
    const __m512i abcd =
        _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
    const __m256i s =
        _mm256_add_epi32(_mm512_castsi512_si256(abcd), _mm512_extracti64x4_epi64(abcd, 1));
    return _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
}

static inline __mmask64 tail_mask64(size_t r) { return r >= 64 ? ~__mmask64(0) : ((__mmask64(1) << r) - 1); }

struct TileI8 {
    static int32_t aux(const int8_t* q, size_t d) {
        int32_t s = 0;
        for (size_t c = 0; c < d; ++c) s += q[c];
        return 128 * s;
    }

    template <int QN>
    static void run(const int8_t* const r[4], const int8_t* q, size_t d, const int32_t* aux,
                    int32_t res[][4]) {
        const __m512i flip = _mm512_set1_epi8(char(0x80));
        __m512i acc[QN][4];
        for (int j = 0; j < QN; ++j)
            for (int t = 0; t < 4; ++t) acc[j][t] = _mm512_setzero_si512();
        const size_t body = d & ~size_t(63);
        for (size_t c = 0; c < body; c += 64) {
            __m512i x[4];
            for (int t = 0; t < 4; ++t) x[t] = _mm512_xor_si512(_mm512_loadu_si512(r[t] + c), flip);
            for (int j = 0; j < QN; ++j) {
                const __m512i qv = _mm512_loadu_si512(q + j * d + c);
                for (int t = 0; t < 4; ++t) acc[j][t] = _mm512_dpbusd_epi32(acc[j][t], x[t], qv);
            }
        }
        if (body < d) {  // masked-off row bytes load as 0 and flip to 128, but meet q lanes of 0
            const __mmask64 m = tail_mask64(d - body);
            __m512i x[4];
            for (int t = 0; t < 4; ++t)
                x[t] = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, r[t] + body), flip);
            for (int j = 0; j < QN; ++j) {
                const __m512i qv = _mm512_maskz_loadu_epi8(m, q + j * d + body);
                for (int t = 0; t < 4; ++t) acc[j][t] = _mm512_dpbusd_epi32(acc[j][t], x[t], qv);
            }
        }
        for (int j = 0; j < QN; ++j) {
            const __m128i s = _mm_sub_epi32(reduce4_epi32(acc[j][0], acc[j][1], acc[j][2], acc[j][3]),
                                            _mm_set1_epi32(aux[j]));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(res[j]), s);
        }
    }
};

}  // namespace avx512
}  // namespace facecore
