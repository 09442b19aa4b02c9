// NEON level (aarch64 only; CMake adds this file only there).
#include "facecore/arm_neon.h"
#include "facecore/kernels.h"
#include "facecore/tile.h"

namespace facecore {
namespace {

void dot_i8(const int8_t* rows, size_t n, size_t d, const int8_t* q, size_t nq, int32_t* out) {
    drive_rows(rows, n, d, q, nq, out, neon::dot_i8_one);
}
void dot_f16(const uint16_t* rows, size_t n, size_t d, const float* q, size_t nq, float* out) {
    drive_rows(rows, n, d, q, nq, out, neon::dot_f16_one);
}
void dot_f32(const float* rows, size_t n, size_t d, const float* q, size_t nq, float* out) {
    drive_rows(rows, n, d, q, nq, out, neon::dot_f32_one);
}

const Kernels kTable{"neon", dot_i8, dot_f16, dot_f32};

}  // namespace

const Kernels* neon_kernels() { return &kTable; }

}  // namespace facecore
