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

// One query, d = 64 * C (+ a masked tail chunk when TAIL): the query stays in registers and four
// rows are reduced and stored together, with none of the general tile driver's bookkeeping. The
// single-query scan is the latency path, so this is where its instructions are counted.
template <int C, bool TAIL>
static inline void dot_i8_one_query(const int8_t* rows, size_t n, size_t d, const int8_t* q, int32_t* out) {
    constexpr int K = C + (TAIL ? 1 : 0);
    const __m512i flip = _mm512_set1_epi8(char(0x80));
    const __mmask64 tail = tail_mask64(d - 64 * C);
    __m512i qv[K];
    for (int c = 0; c < C; ++c) qv[c] = _mm512_loadu_si512(q + 64 * c);
    if constexpr (TAIL) qv[C] = _mm512_maskz_loadu_epi8(tail, q + 64 * C);
    const int32_t aux = TileI8::aux(q, d);
    auto load = [&](const int8_t* row, int c) {
        if (TAIL && c == C) return _mm512_xor_si512(_mm512_maskz_loadu_epi8(tail, row + 64 * c), flip);
        return _mm512_xor_si512(_mm512_loadu_si512(row + 64 * c), flip);
    };
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const int8_t* r = rows + i * d;
        __m512i acc[4];
        for (int t = 0; t < 4; ++t) acc[t] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), load(r + t * d, 0), qv[0]);
        for (int c = 1; c < K; ++c)
            for (int t = 0; t < 4; ++t) acc[t] = _mm512_dpbusd_epi32(acc[t], load(r + t * d, c), qv[c]);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                         _mm_sub_epi32(reduce4_epi32(acc[0], acc[1], acc[2], acc[3]), _mm_set1_epi32(aux)));
    }
    for (; i < n; ++i) {
        __m512i acc = _mm512_setzero_si512();
        for (int c = 0; c < K; ++c) acc = _mm512_dpbusd_epi32(acc, load(rows + i * d, c), qv[c]);
        out[i] = _mm512_reduce_add_epi32(acc) - aux;
    }
}

// Picks the one-query kernel for d <= 256; returns false for larger d.
static inline bool dot_i8_one_query(const int8_t* rows, size_t n, size_t d, const int8_t* q, int32_t* out) {
    switch ((d + 63) / 64 * 2 + (d % 64 != 0)) {
        case 3: dot_i8_one_query<0, true>(rows, n, d, q, out); return true;
        case 2: dot_i8_one_query<1, false>(rows, n, d, q, out); return true;
        case 5: dot_i8_one_query<1, true>(rows, n, d, q, out); return true;
        case 4: dot_i8_one_query<2, false>(rows, n, d, q, out); return true;
        case 7: dot_i8_one_query<2, true>(rows, n, d, q, out); return true;
        case 6: dot_i8_one_query<3, false>(rows, n, d, q, out); return true;
        case 9: dot_i8_one_query<3, true>(rows, n, d, q, out); return true;
        case 8: dot_i8_one_query<4, false>(rows, n, d, q, out); return true;
        default: return false;
    }
}

}  // namespace avx512
}  // namespace facecore
