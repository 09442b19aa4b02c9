// What every runner shares: the batch buckets, input checks, and the factory that picks a runner by
// name among those this build has (CMake defines FACECORE_HAVE_TORCH / FACECORE_HAVE_TENSORRT).
#include "facecore/engine/runner.h"

#include <algorithm>

#include "runners.h"

#if defined(FACECORE_HAVE_TENSORRT) || defined(FACECORE_TORCH_CUDA)
#define FACECORE_CUDA_RUNTIME 1
#include <cuda_runtime_api.h>
#endif

namespace facecore::engine {

std::string shape_str(const Shape& s) {
    std::string out = "(";
    for (size_t i = 0; i < s.size(); ++i) {
        if (i) out += ", ";
        out += s[i] < 0 ? "?" : std::to_string(s[i]);
    }
    return out + (s.size() == 1 ? ",)" : ")");
}

std::vector<int> batch_buckets(int max_batch) {
    std::vector<int> out;
    for (int b = 1; b < max_batch; b *= 2) out.push_back(b);
    out.push_back(max_batch);
    return out;
}

bool fixed_shapes(const ModelSpec& spec) {
    for (const auto& in : spec.inputs)
        for (size_t d = 1; d < in.shape.size(); ++d)
            if (in.shape[d] < 0) return false;
    return true;
}

int64_t check_inputs(const ModelSpec& spec, const std::vector<View>& inputs) {
    const std::string model = "model '" + spec.name + "'";
    FC_REQUIRE(inputs.size() == spec.inputs.size(),
               model + " takes " + std::to_string(spec.inputs.size()) + " input(s), got " +
                   std::to_string(inputs.size()));
    int64_t n = -1;
    for (size_t i = 0; i < inputs.size(); ++i) {
        const TensorSpec& want = spec.inputs[i];
        const Shape& got = inputs[i].shape;
        const std::string what = model + " input '" + want.name + "'";
        FC_REQUIRE(got.size() == want.shape.size(),
                   what + " must be " + std::to_string(want.shape.size()) + "-D " +
                       shape_str(want.shape) + ", got " + shape_str(got));
        for (size_t d = 1; d < got.size(); ++d)
            FC_REQUIRE(want.shape[d] < 0 ? got[d] > 0 : got[d] == want.shape[d],
                       what + " must have shape " + shape_str(want.shape) + ", got " + shape_str(got));
        FC_REQUIRE(got[0] > 0, what + " has an empty batch");
        FC_REQUIRE(n < 0 || got[0] == n, model + ": inputs disagree on the batch size");
        FC_REQUIRE(inputs[i].data != nullptr, what + " has no data");
        n = got[0];
    }
    return n;
}

std::vector<std::string> available_runners() {
    std::vector<std::string> out;
#ifdef FACECORE_HAVE_TENSORRT
    out.push_back("tensorrt");
#endif
#ifdef FACECORE_HAVE_TORCH
    out.push_back("libtorch");
#endif
    out.push_back("reference");
    return out;
}

std::shared_ptr<IRunner> make_runner(const std::string& kind, const ModelSpec& spec,
                                     const RunnerOptions& options) {
    FC_REQUIRE(!spec.inputs.empty() && !spec.outputs.empty(),
               "model '" + spec.name + "' needs its inputs and outputs from the manifest");
    FC_REQUIRE(spec.max_batch >= 1, "max_batch must be >= 1");
    for (const auto& in : spec.inputs)
        FC_REQUIRE(!in.shape.empty(), "model '" + spec.name + "' input '" + in.name + "' has no shape");
    FC_REQUIRE(options.precision == "auto" || options.precision == "fp32" || options.precision == "fp16",
               "precision must be 'auto', 'fp32' or 'fp16', got '" + options.precision + "'");
    if (kind == "reference") return make_reference_runner(spec, options);
#ifdef FACECORE_HAVE_TORCH
    if (kind == "libtorch") return make_torch_runner(spec, options);
#endif
#ifdef FACECORE_HAVE_TENSORRT
    if (kind == "tensorrt") return make_tensorrt_runner(spec, options);
#endif
    std::string have;
    for (const auto& r : available_runners()) have += (have.empty() ? "" : ", ") + r;
    throw Error("runner '" + kind + "' is not in this build (it has: " + have + ")");
}

// The CUDA runtime's own answer, whichever CUDA runner this build has: a TensorRT build beside a
// cpu-only LibTorch still sees its GPUs.
int cuda_device_count() {
#ifdef FACECORE_CUDA_RUNTIME
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
#else
    return 0;
#endif
}

std::string cuda_device_name(int index) {
    FC_REQUIRE(index >= 0 && index < cuda_device_count(),
               "no CUDA device " + std::to_string(index));
#ifdef FACECORE_CUDA_RUNTIME
    cudaDeviceProp prop{};
    return cudaGetDeviceProperties(&prop, index) == cudaSuccess ? prop.name : "";
#else
    return {};
#endif
}

}  // namespace facecore::engine
