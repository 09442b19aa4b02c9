// Tensors that cross the engine: float32, C-contiguous, batch-first. `View` borrows the caller's
// memory (valid until the call returns); `Tensor` owns its data. Every FaceCore model takes and
// returns float32 (the manifest says so), so there is no dtype here: the binding refuses others.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace facecore::engine {

using Shape = std::vector<int64_t>;

inline int64_t numel(const Shape& s) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    return n;
}

std::string shape_str(const Shape& s);

// One input or output of a model; -1 is a dimension of any size (dimension 0, the batch, always).
struct TensorSpec {
    std::string name;
    Shape shape;
};

struct View {
    const float* data = nullptr;
    Shape shape;
};

struct Tensor {
    Shape shape;
    std::vector<float> data;
};

// A caller's mistake (wrong shape, unknown model, bad option): the binding raises ValueError.
class Error : public std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

// A runner failed (CUDA, TorchScript, TensorRT, out of memory): the binding raises RuntimeError;
// only the callers whose items were in that run see it.
class RunError : public std::runtime_error {
    using std::runtime_error::runtime_error;
};

}  // namespace facecore::engine

// Caller mistakes throw Error with the message; internal invariants are asserts (STYLE.md).
#define FC_REQUIRE(cond, msg)                                     \
    do {                                                          \
        if (!(cond)) throw ::facecore::engine::Error(msg);        \
    } while (0)
