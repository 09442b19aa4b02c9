#include "facecore/quantize.h"

#include <algorithm>
#include <cmath>

namespace facecore {

void quantize_i8(const float* x, size_t n, size_t d, int8_t* out, float* scales) {
    for (size_t i = 0; i < n; ++i) {
        const float* v = x + i * d;
        int8_t* o = out + i * d;
        float m = 0.f;
        for (size_t c = 0; c < d; ++c) m = std::max(m, std::fabs(v[c]));
        if (m == 0.f) {
            std::fill(o, o + d, int8_t(0));
            scales[i] = 0.f;
            continue;
        }
        const float inv = 127.f / m;
        for (size_t c = 0; c < d; ++c)
            o[c] = int8_t(std::clamp(std::nearbyint(v[c] * inv), -127.f, 127.f));
        scales[i] = m / 127.f;
    }
}

}  // namespace facecore
