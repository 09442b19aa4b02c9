// AVX-512 VNNI level (compiled with -mavx512f/bw/vl/dq/vnni; selected only when the CPU has them).
#include "facecore/kernels.h"
#include "facecore/tile.h"
#include "facecore/x86_avx512_f16.h"
#include "facecore/x86_avx512_i8.h"
#include "facecore/x86_avx512_i8_batch.h"

namespace facecore {
namespace {

void dot_i8(const int8_t* rows, size_t n, size_t d, const int8_t* q, size_t nq, int32_t* out) {
    // Query groups share each transposed block of rows; one query (d <= 256) keeps itself in
    // registers; anything else runs the general row tiles.
    if (nq >= 4 && d <= avx512::kMaxBatchDim) return avx512::dot_i8_batch(rows, n, d, q, nq, out);
    if (nq == 1 && avx512::dot_i8_one_query(rows, n, d, q, out)) return;
    drive_tiles<4, avx512::TileI8>(rows, n, d, q, nq, out);
}
void dot_f16(const uint16_t* rows, size_t n, size_t d, const float* q, size_t nq, float* out) {
    drive_tiles<4, avx512::TileF<uint16_t>>(rows, n, d, q, nq, out);
}
void dot_f32(const float* rows, size_t n, size_t d, const float* q, size_t nq, float* out) {
    drive_tiles<4, avx512::TileF<float>>(rows, n, d, q, nq, out);
}

const Kernels kTable{"avx512_vnni", dot_i8, dot_f16, dot_f32};

}  // namespace

const Kernels* avx512_vnni_kernels() { return &kTable; }

}  // namespace facecore
