// Picks the kernel table once: detection through the compiler's cpuid helpers (which also check
// that the OS saves the wider registers), overridable with FACECORE_SIMD_LEVEL.
#include "facecore/dispatch.h"

#include <cstdlib>
#include <stdexcept>

namespace facecore {
namespace {

bool cpu_has(const std::string& level) {
    if (level == "serial") return serial_kernels() != nullptr;
#if defined(__x86_64__) || defined(_M_X64)
    if (level == "avx512_vnni")
        return avx512_vnni_kernels() && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni");
    if (level == "avx2")
        return avx2_kernels() && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("f16c");
#endif
#if defined(__aarch64__)
    if (level == "neon") return neon_kernels() != nullptr;
#endif
    return false;
}

const Kernels* table(const std::string& level) {
    if (level == "avx512_vnni") return avx512_vnni_kernels();
    if (level == "avx2") return avx2_kernels();
    if (level == "neon") return neon_kernels();
    if (level == "serial") return serial_kernels();
    return nullptr;
}

const char* const kAll[] = {"avx512_vnni", "avx2", "neon", "serial"};

std::string joined(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
}

}  // namespace

#ifndef FACECORE_HAVE_AVX512
const Kernels* avx512_vnni_kernels() { return nullptr; }
#endif
#ifndef FACECORE_HAVE_AVX2
const Kernels* avx2_kernels() { return nullptr; }
#endif
#ifndef FACECORE_HAVE_NEON
const Kernels* neon_kernels() { return nullptr; }
#endif

std::vector<std::string> available_levels() {
    std::vector<std::string> out;
    for (const char* l : kAll)
        if (cpu_has(l)) out.emplace_back(l);
    return out;
}

const Kernels& kernels_for(const std::string& level) {
    if (!table(level) && level != "avx512_vnni" && level != "avx2" && level != "neon")
        throw std::invalid_argument("unknown SIMD level '" + level +
                                    "' (levels: avx512_vnni, avx2, neon, serial)");
    if (!cpu_has(level))
        throw std::invalid_argument("SIMD level '" + level + "' is not available on this CPU/build (available: " +
                                    joined(available_levels()) + ")");
    return *table(level);
}

const Kernels& active_kernels() {
    static const Kernels& chosen = [] () -> const Kernels& {
        const char* forced = std::getenv("FACECORE_SIMD_LEVEL");
        if (forced && *forced) return kernels_for(forced);
        return kernels_for(available_levels().front());
    }();
    return chosen;
}

}  // namespace facecore
