// Block kernels of the exact scan: inner products of a block of rows with a group of queries.
//
// Each ISA lives in its own translation unit compiled with that ISA's flags; every helper there has
// internal linkage, so no inline function compiled for AVX-512 can be picked by the linker for code
// that runs on an older CPU. Kernels are pure functions: thread-safe, no allocation, no exceptions.
#pragma once

#include <cstddef>
#include <cstdint>

namespace facecore {

// out[j * n + i] = <rows[i], queries[j]>; rows and queries are contiguous with stride d.
// The int8 kernel returns exact integer sums, identical at every level.
using DotI8 = void (*)(const int8_t* rows, size_t n, size_t d, const int8_t* queries, size_t nq,
                       int32_t* out);
// fp16 rows (IEEE binary16 bit patterns) against fp32 queries, accumulated in fp32.
using DotF16 = void (*)(const uint16_t* rows, size_t n, size_t d, const float* queries, size_t nq,
                        float* out);
using DotF32 = void (*)(const float* rows, size_t n, size_t d, const float* queries, size_t nq,
                        float* out);

struct Kernels {
    const char* name;
    DotI8 dot_i8;
    DotF16 dot_f16;
    DotF32 dot_f32;
};

// Per-ISA tables; null when the ISA is not compiled into this build.
const Kernels* serial_kernels();
const Kernels* avx2_kernels();
const Kernels* avx512_vnni_kernels();
const Kernels* neon_kernels();

}  // namespace facecore
