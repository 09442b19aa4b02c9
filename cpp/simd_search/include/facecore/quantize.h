// fp32 -> int8 with one scale per vector: q = round(x * 127 / max|x|), scale = max|x| / 127.
// Chosen over one fixed scale for unit vectors by measured score error (docs/search.md,
// tools/quant_error.py). A zero vector gets scale 0 and all-zero codes.
#pragma once

#include <cstddef>
#include <cstdint>

namespace facecore {

void quantize_i8(const float* x, size_t n, size_t d, int8_t* out, float* scales);

}  // namespace facecore
