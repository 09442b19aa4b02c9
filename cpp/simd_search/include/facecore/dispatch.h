// CPU feature detection and kernel selection, done once per process.
#pragma once

#include <string>
#include <vector>

#include "facecore/kernels.h"

namespace facecore {

// Levels this build has and this CPU can run, best first; "serial" is always last.
std::vector<std::string> available_levels();

// The level chosen at first use: the best available, or FACECORE_SIMD_LEVEL when set.
// Throws std::invalid_argument when FACECORE_SIMD_LEVEL names an unknown or unavailable level.
const Kernels& active_kernels();

// A specific level; throws std::invalid_argument when it is unknown or unavailable here.
const Kernels& kernels_for(const std::string& level);

}  // namespace facecore
