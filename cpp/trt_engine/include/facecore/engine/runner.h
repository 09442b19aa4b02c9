// One interface, several runners behind it (cyrusbehr/tensorrt-cpp-api's IEngine): a runner holds
// one model loaded on one device; each of its contexts runs one batch at a time on its own stream
// (on a CPU runner: its own thread's turn). A runner is shared by its contexts and must outlive them;
// a context is used by one thread at a time (the pool guarantees it) and is never shared.
//
// Runners: "reference" (plain C++, always built: a fixed elementwise model for the pool and batcher
// tests), "libtorch" (TorchScript files, cpu or cuda:N; built when CMake finds Torch) and "tensorrt"
// (ONNX files or serialized engines, cuda:N; built when CMake finds CUDA and TensorRT).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "facecore/engine/tensor.h"

namespace facecore::engine {

struct ModelSpec {
    std::string name;                  // the model's role ("recognizer"), for messages
    std::string path;                  // its file; the reference runner reads options from it
    std::vector<TensorSpec> inputs;    // from the manifest: dimension 0 is the batch
    std::vector<std::string> outputs;  // output names, in the model's order
    int max_batch = 32;                // largest batch one run takes (bigger requests are split)
};

struct RunnerOptions {
    std::string device = "cpu";      // "cpu" or "cuda:N"
    std::string precision = "auto";  // "fp32", "fp16", or "auto": fp16 where the GPU has it (sm_70+)
    bool cuda_graphs = true;         // capture one CUDA graph per batch bucket (fixed shapes only)
};

class IContext {
public:
    virtual ~IContext() = default;
    // Runs one batch: inputs[i] matches spec().inputs[i], all with the same dimension 0 (<= max_batch).
    // Returns the outputs in spec().outputs order, batch-major. Throws RunError on failure.
    virtual std::vector<Tensor> run(const std::vector<View>& inputs) = 0;
};

class IRunner {
public:
    virtual ~IRunner() = default;
    virtual const ModelSpec& spec() const = 0;
    virtual std::string kind() const = 0;      // "reference", "libtorch", "tensorrt"
    virtual std::string device() const = 0;    // "cpu", "cuda:0"
    virtual std::string precision() const = 0; // what runs: "fp32" or "fp16"
    virtual std::unique_ptr<IContext> create_context() = 0;
};

// Batch sizes a context warms (and captures a graph for): 1, 2, 4, ... up to max_batch, and max_batch.
std::vector<int> batch_buckets(int max_batch);

// True when every non-batch dimension of every input is fixed (a model that can be warmed).
bool fixed_shapes(const ModelSpec& spec);

// The runners this build has, in order of preference.
std::vector<std::string> available_runners();

// Loads `spec` with runner `kind` on `options.device`. Throws Error for an unknown runner, device
// or option, RunError when loading fails (a missing or corrupt file, out of memory).
std::shared_ptr<IRunner> make_runner(const std::string& kind, const ModelSpec& spec,
                                     const RunnerOptions& options);

// CUDA devices this build can use (0 without a CUDA runner or without a GPU) and their names.
int cuda_device_count();
std::string cuda_device_name(int index);

// Checks the inputs of one run against spec: count, rank, fixed dimensions, one batch size.
// Returns that batch size. Throws Error naming the model and the input.
int64_t check_inputs(const ModelSpec& spec, const std::vector<View>& inputs);

}  // namespace facecore::engine
