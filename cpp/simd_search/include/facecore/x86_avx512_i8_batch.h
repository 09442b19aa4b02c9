// AVX-512 VNNI int8 kernel for groups of queries. Rows are first transposed, 16 at a time, into
// 4-byte columns (column g holds bytes 4g..4g+3 of each of the 16 rows, flipped to unsigned), so
// one vpdpbusd against a broadcast 4-byte piece of a query advances 16 row sums at once and no
// horizontal reduction is needed. The transpose is paid once per 16 rows and shared by the whole
// query group. Used for d <= kMaxBatchDim; scratch lives on the stack.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace facecore {
namespace avx512 {

constexpr size_t kMaxBatchDim = 2048;

// Transposes rows[0..rn) (rn <= 16) into cols[g * 16 + r]; missing rows and the tail of d are 0
// before the flip, i.e. 0x80 after it, which meets zero query bytes.
static inline void transpose16(const int8_t* rows, size_t rn, size_t d, uint32_t* cols) {
    const size_t full = d / 4;
    for (size_t r = 0; r < 16; ++r) {
        if (r >= rn) {
            for (size_t g = 0; g < (d + 3) / 4; ++g) cols[g * 16 + r] = 0x80808080u;
            continue;
        }
        const int8_t* row = rows + r * d;
        for (size_t g = 0; g < full; ++g) {
            uint32_t v;
            std::memcpy(&v, row + 4 * g, 4);
            cols[g * 16 + r] = v ^ 0x80808080u;
        }
        if (full * 4 < d) {
            uint32_t v = 0;
            for (size_t c = full * 4; c < d; ++c) v |= uint32_t(uint8_t(row[c])) << (8 * (c - full * 4));
            cols[full * 16 + r] = v ^ 0x80808080u;
        }
    }
}

template <int QN>
static inline void columns_times_queries(const uint32_t* cols, size_t groups, const uint32_t* qpad,
                                         size_t qstride, const int32_t* aux, int32_t* out, size_t n,
                                         size_t rn) {
    __m512i acc[QN];
    for (int j = 0; j < QN; ++j) acc[j] = _mm512_setzero_si512();
    for (size_t g = 0; g < groups; ++g) {
        const __m512i x = _mm512_load_si512(cols + g * 16);
        for (int j = 0; j < QN; ++j)
            acc[j] = _mm512_dpbusd_epi32(acc[j], x, _mm512_set1_epi32(int(qpad[j * qstride + g])));
    }
    const __mmask16 m = rn >= 16 ? __mmask16(0xffff) : __mmask16((1u << rn) - 1);
    for (int j = 0; j < QN; ++j)
        _mm512_mask_storeu_epi32(out + j * n, m, _mm512_sub_epi32(acc[j], _mm512_set1_epi32(aux[j])));
}

// out[j * n + i] = <rows[i], q[j]> exactly, for d <= kMaxBatchDim.
static inline void dot_i8_batch(const int8_t* rows, size_t n, size_t d, const int8_t* q, size_t nq,
                                int32_t* out) {
    constexpr size_t QC = 64, QB = 8;  // queries sharing one transpose / one pass over a column
    const size_t groups = (d + 3) / 4;
    alignas(64) uint32_t cols[kMaxBatchDim / 4 * 16];
    uint32_t qpad[QC * (kMaxBatchDim / 4)];
    int32_t aux[QC];
    for (size_t j0 = 0; j0 < nq; j0 += QC) {
        const size_t qc = nq - j0 < QC ? nq - j0 : QC;
        for (size_t j = 0; j < qc; ++j) {
            const int8_t* qj = q + (j0 + j) * d;
            std::memset(qpad + j * groups, 0, groups * 4);
            std::memcpy(qpad + j * groups, qj, d);
            int32_t s = 0;
            for (size_t c = 0; c < d; ++c) s += qj[c];
            aux[j] = 128 * s;
        }
        for (size_t i = 0; i < n; i += 16) {
            const size_t rn = n - i < 16 ? n - i : 16;
            transpose16(rows + i * d, rn, d, cols);
            for (size_t jb = 0; jb < qc; jb += QB) {
                const size_t qn = qc - jb < QB ? qc - jb : QB;
                const uint32_t* qp = qpad + jb * groups;
                const int32_t* ax = aux + jb;
                int32_t* o = out + (j0 + jb) * n + i;
                switch (qn) {
                    case 1: columns_times_queries<1>(cols, groups, qp, groups, ax, o, n, rn); break;
                    case 2: columns_times_queries<2>(cols, groups, qp, groups, ax, o, n, rn); break;
                    case 3: columns_times_queries<3>(cols, groups, qp, groups, ax, o, n, rn); break;
                    case 4: columns_times_queries<4>(cols, groups, qp, groups, ax, o, n, rn); break;
                    case 5: columns_times_queries<5>(cols, groups, qp, groups, ax, o, n, rn); break;
                    case 6: columns_times_queries<6>(cols, groups, qp, groups, ax, o, n, rn); break;
                    case 7: columns_times_queries<7>(cols, groups, qp, groups, ax, o, n, rn); break;
                    default: columns_times_queries<8>(cols, groups, qp, groups, ax, o, n, rn); break;
                }
            }
        }
    }
}

}  // namespace avx512
}  // namespace facecore
