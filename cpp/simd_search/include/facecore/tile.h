// Loops that run a level's micro-kernel over a block of rows and a group of queries.
//
// drive_tiles: a register-blocked micro-kernel of 4 rows x QN queries over a block of rows.
//
// Include only from a per-ISA translation unit, with a Tile type of that unit's anonymous
// namespace: the template then has internal linkage there and cannot leak across ISAs.
// Tile provides:  static Aux aux(const Q* query, size_t d)   per-query precomputation
//                 template <int QN> static void run(const Row* const r[4], const Q* q, size_t d,
//                                                   const Aux* aux, Out res[][4])
#pragma once

#include <cstddef>

namespace facecore {

template <int QMAX, class Tile, class Row, class Q, class Out>
static inline void drive_tiles(const Row* rows, size_t n, size_t d, const Q* queries, size_t nq,
                               Out* out) {
    using Aux = decltype(Tile::aux(queries, d));
    for (size_t j = 0; j < nq; j += QMAX) {
        const size_t qn = nq - j < size_t(QMAX) ? nq - j : size_t(QMAX);
        const Q* q = queries + j * d;
        Aux aux[QMAX];
        for (size_t jj = 0; jj < qn; ++jj) aux[jj] = Tile::aux(q + jj * d, d);
        for (size_t i = 0; i < n; i += 4) {
            const size_t rn = n - i < 4 ? n - i : 4;
            const Row* r[4];
            for (size_t t = 0; t < 4; ++t) r[t] = rows + (i + (t < rn ? t : 0)) * d;
            Out res[QMAX][4];
            switch (qn) {
                case 1: Tile::template run<1>(r, q, d, aux, res); break;
                case 2: if constexpr (QMAX >= 2) Tile::template run<2>(r, q, d, aux, res); break;
                case 3: if constexpr (QMAX >= 3) Tile::template run<3>(r, q, d, aux, res); break;
                default: if constexpr (QMAX >= 4) Tile::template run<QMAX>(r, q, d, aux, res); break;
            }
            for (size_t jj = 0; jj < qn; ++jj)
                for (size_t t = 0; t < rn; ++t) out[(j + jj) * n + i + t] = res[jj][t];
        }
    }
}

// One row and one query at a time, for levels without register tiles (serial, NEON):
// out[j * n + i] = one(rows + i * d, queries + j * d, d).
template <class Row, class Q, class Out, class One>
static inline void drive_rows(const Row* rows, size_t n, size_t d, const Q* queries, size_t nq, Out* out,
                              One one) {
    for (size_t j = 0; j < nq; ++j)
        for (size_t i = 0; i < n; ++i) out[j * n + i] = one(rows + i * d, queries + j * d, d);
}

}  // namespace facecore
