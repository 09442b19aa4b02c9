// Exact top-k inner-product scan over a matrix held in chunks (so it can grow without copies).
//
// Threading: scan() splits the rows into contiguous ranges, one per worker thread (the calling
// thread is one of them), keeps a top-k heap per (thread, query) and merges them after the join.
// Each row block (a few hundred KB) is read once for a whole group of queries, so a batch streams
// the matrix once, not once per query. Worker errors are collected and rethrown once after the
// join. scan() touches no Python state: callers release the GIL around it. It only reads its
// inputs, so any number of scans may run at once over the same chunks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "facecore/kernels.h"

namespace facecore {

enum class Elem { I8, F16, F32 };

struct ChunkView {
    const void* data;      // rows x d, C-contiguous, element type Elem
    const float* scales;   // int8 only, optional: per-row dequantisation scale
    int64_t rows;
};

struct ScanRequest {
    Elem elem = Elem::F32;
    size_t d = 0;
    std::vector<ChunkView> chunks;     // global row numbers run through the chunks in order
    const void* queries = nullptr;     // nq x d: int8 for Elem::I8, float otherwise
    const float* query_scales = nullptr;  // int8 only, optional
    size_t nq = 0;
    size_t k = 0;
    unsigned threads = 0;              // 0: all hardware threads
    const uint8_t* allow_bits = nullptr;  // optional bitmask over global rows (bit set = may match),
                                          // little-endian bit order, as numpy.packbits(bitorder="little")
    const int64_t* allow_rows = nullptr;  // optional sorted, unique global rows: only these are scored
    size_t n_allow_rows = 0;
    const Kernels* kernels = nullptr;
};

// Writes nq x k rows and scores, best first (higher score, then lower row on ties); missing
// results are row -1, score -inf.
void scan(const ScanRequest& req, int64_t* out_rows, float* out_scores);

// Worker threads scan() would use for `work` = rows x d x queries multiply-adds.
unsigned plan_threads(unsigned requested, double work, size_t rows);

}  // namespace facecore
