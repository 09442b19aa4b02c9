// The TensorRT runner: nvinfer1 with the ONNX parser, on cuda:N. It takes an ONNX file (building
// the engine in memory: one optimisation profile, batch 1..max_batch, FP16 where the GPU has it)
// or a serialized engine (.engine / .plan) that tools/build_engines.py wrote for this GPU and
// TensorRT version; TensorRT refuses an engine of another version or GPU, and so does this runner.
// Each context owns an IExecutionContext, a CUDA stream, device buffers and pinned host staging,
// all grown to the largest batch seen and reused. Threading: the engine is shared by the contexts;
// a context is used by one thread at a time.
//
// API floor: TensorRT 8.6 (the name-based I/O of enqueueV3 came in 8.5; 8.6 is the last release
// with Pascal, sm_61: Tesla P4, GTX 10xx). Differences handled here: 8.x needs the explicit-batch
// network flag, 10 deprecates it; 11 builds strongly typed networks only (no FP16 builder flag),
// so on 11 a model runs in the ONNX file's own precision (fp32 for ours).
// Compile-checked against the public headers of 8.6.1, 10.13 and 11.1; never linked or run here
// (no TensorRT library can be installed on the project's machines): see docs/gpu.md.
#include <NvInfer.h>
#include <NvOnnxParser.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <mutex>
#include <type_traits>

#include "runners.h"

#if NV_TENSORRT_MAJOR < 8 || (NV_TENSORRT_MAJOR == 8 && NV_TENSORRT_MINOR < 6)
#error "the TensorRT runner needs TensorRT 8.6 or newer"
#endif

namespace facecore::engine {

namespace {

class Logger : public nvinfer1::ILogger {
public:
    void log(Severity severity, const char* msg) noexcept override {
        if (severity <= Severity::kWARNING) std::fprintf(stderr, "facecore tensorrt: %s\n", msg);
    }
};

Logger& logger() {
    static Logger l;
    return l;
}

template <class T>
struct Delete {
    void operator()(T* p) const { delete p; }  // TensorRT 8+: public destructors (destroy() is gone in 10)
};
template <class T>
using Owned = std::unique_ptr<T, Delete<T>>;

void cuda_ok(cudaError_t err, const std::string& what) {
    if (err != cudaSuccess) throw RunError(what + ": " + cudaGetErrorString(err));
}

using DimValue = std::remove_reference_t<decltype(std::declval<nvinfer1::Dims>().d[0])>;

nvinfer1::Dims dims_of(const Shape& s) {
    nvinfer1::Dims d{};
    d.nbDims = int32_t(s.size());
    for (size_t i = 0; i < s.size(); ++i) d.d[i] = DimValue(s[i]);
    return d;
}

Shape shape_of(const nvinfer1::Dims& d) { return Shape(d.d, d.d + d.nbDims); }

bool ends_with(const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// Sizes of a dynamic non-batch dimension (P-Net's H and W): what the profile covers.
constexpr int64_t kMinSide = 12, kOptSide = 320, kMaxSide = 2048;

class TrtRunner : public IRunner {
public:
    TrtRunner(ModelSpec spec, const RunnerOptions& options) : spec_(std::move(spec)) {
        index_ = parse_device(options.device);
        FC_REQUIRE(index_ >= 0, "the tensorrt runner runs on 'cuda:N', not '" + options.device + "'");
        FC_REQUIRE(index_ < cuda_device_count(), "no CUDA device " + std::to_string(index_));
        cuda_ok(cudaSetDevice(index_), "cudaSetDevice");
        cudaDeviceProp prop{};
        cuda_ok(cudaGetDeviceProperties(&prop, index_), "cudaGetDeviceProperties");
#if NV_TENSORRT_MAJOR >= 11
        FC_REQUIRE(options.precision != "fp16",
                   "TensorRT 11 builds strongly typed networks: fp16 needs an fp16 ONNX file (use 'auto' or 'fp32')");
        half_ = false;
#else
        half_ = options.precision == "fp16" || (options.precision == "auto" && prop.major >= 7);
#endif
        const std::vector<char> plan = ends_with(spec_.path, ".onnx") ? build() : read(spec_.path);
        runtime_.reset(nvinfer1::createInferRuntime(logger()));
        if (!runtime_) throw RunError("cannot create a TensorRT runtime");
        engine_.reset(runtime_->deserializeCudaEngine(plan.data(), plan.size()));
        if (!engine_)
            throw RunError("cannot load the TensorRT engine of model '" + spec_.name + "' from " + spec_.path +
                           ": built for another GPU or TensorRT version? rebuild it (tools/build_engines.py)");
        for (const auto& in : spec_.inputs)
            FC_REQUIRE(engine_->getTensorIOMode(in.name.c_str()) == nvinfer1::TensorIOMode::kINPUT &&
                           engine_->getTensorDataType(in.name.c_str()) == nvinfer1::DataType::kFLOAT,
                       "model '" + spec_.name + "': the engine has no float32 input '" + in.name + "'");
        for (const auto& out : spec_.outputs)
            FC_REQUIRE(engine_->getTensorIOMode(out.c_str()) == nvinfer1::TensorIOMode::kOUTPUT &&
                           engine_->getTensorDataType(out.c_str()) == nvinfer1::DataType::kFLOAT,
                       "model '" + spec_.name + "': the engine has no float32 output '" + out + "'");
    }

    const ModelSpec& spec() const override { return spec_; }
    std::string kind() const override { return "tensorrt"; }
    std::string device() const override { return "cuda:" + std::to_string(index_); }
    std::string precision() const override { return half_ ? "fp16" : "fp32"; }
    std::unique_ptr<IContext> create_context() override;

    nvinfer1::ICudaEngine& engine() { return *engine_; }
    int index() const { return index_; }

private:
    static std::vector<char> read(const std::string& path) {
        std::ifstream f(path, std::ios::binary);
        if (!f) throw RunError("cannot read " + path);
        return std::vector<char>(std::istreambuf_iterator<char>(f), {});
    }

    std::vector<char> build() {
        const std::string what = "building model '" + spec_.name + "' for TensorRT";
        Owned<nvinfer1::IBuilder> builder(nvinfer1::createInferBuilder(logger()));
        if (!builder) throw RunError(what + ": cannot create a builder");
#if NV_TENSORRT_MAJOR < 10
        const auto flags = 1U << static_cast<uint32_t>(nvinfer1::NetworkDefinitionCreationFlag::kEXPLICIT_BATCH);
#else
        const nvinfer1::NetworkDefinitionCreationFlags flags = 0;  // explicit batch is the only kind
#endif
        Owned<nvinfer1::INetworkDefinition> network(builder->createNetworkV2(flags));
        Owned<nvonnxparser::IParser> parser(nvonnxparser::createParser(*network, logger()));
        if (!parser->parseFromFile(spec_.path.c_str(), static_cast<int>(nvinfer1::ILogger::Severity::kWARNING))) {
            std::string errors;
            for (int32_t i = 0; i < parser->getNbErrors(); ++i) errors += std::string(" ") + parser->getError(i)->desc();
            throw RunError(what + ": the ONNX parser refused " + spec_.path + ":" + errors);
        }
        Owned<nvinfer1::IBuilderConfig> config(builder->createBuilderConfig());
        config->setMemoryPoolLimit(nvinfer1::MemoryPoolType::kWORKSPACE, size_t(1) << 30);
#if NV_TENSORRT_MAJOR < 11
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"  // 10 deprecates kFP16 (for typed networks)
        if (half_) config->setFlag(nvinfer1::BuilderFlag::kFP16);
#pragma GCC diagnostic pop
#endif
        nvinfer1::IOptimizationProfile* profile = builder->createOptimizationProfile();
        for (int32_t i = 0; i < network->getNbInputs(); ++i) {
            nvinfer1::ITensor* input = network->getInput(i);
            const Shape declared = shape_of(input->getDimensions());
            Shape lo = declared, opt = declared, hi = declared;
            for (size_t d = 0; d < declared.size(); ++d) {
                if (declared[d] >= 0) continue;
                if (d == 0) {
                    lo[d] = 1, opt[d] = spec_.max_batch, hi[d] = spec_.max_batch;
                } else {
                    lo[d] = kMinSide, opt[d] = kOptSide, hi[d] = kMaxSide;
                }
            }
            profile->setDimensions(input->getName(), nvinfer1::OptProfileSelector::kMIN, dims_of(lo));
            profile->setDimensions(input->getName(), nvinfer1::OptProfileSelector::kOPT, dims_of(opt));
            profile->setDimensions(input->getName(), nvinfer1::OptProfileSelector::kMAX, dims_of(hi));
        }
        config->addOptimizationProfile(profile);
        Owned<nvinfer1::IHostMemory> plan(builder->buildSerializedNetwork(*network, *config));
        if (!plan) throw RunError(what + " failed (TensorRT's log above says why)");
        const char* bytes = static_cast<const char*>(plan->data());
        return std::vector<char>(bytes, bytes + plan->size());
    }

    ModelSpec spec_;
    int index_ = 0;
    bool half_ = false;
    Owned<nvinfer1::IRuntime> runtime_;
    Owned<nvinfer1::ICudaEngine> engine_;
};

// A device buffer and a pinned host buffer of one tensor, grown as needed.
struct Buffers {
    void* device = nullptr;
    void* host = nullptr;
    size_t capacity = 0;

    void reserve(size_t bytes, const std::string& what) {
        if (bytes <= capacity) return;
        release();
        cuda_ok(cudaMalloc(&device, bytes), what + ": cudaMalloc of " + std::to_string(bytes) + " bytes");
        cuda_ok(cudaMallocHost(&host, bytes), what + ": cudaMallocHost of " + std::to_string(bytes) + " bytes");
        capacity = bytes;
    }
    void release() {
        if (device) cudaFree(device);
        if (host) cudaFreeHost(host);
        device = host = nullptr;
        capacity = 0;
    }
};

class TrtContext : public IContext {
public:
    explicit TrtContext(TrtRunner& runner) : r_(runner) {
        cuda_ok(cudaSetDevice(r_.index()), "cudaSetDevice");
        context_.reset(r_.engine().createExecutionContext());
        if (!context_)
            throw RunError("cannot create an execution context of model '" + r_.spec().name + "' on " + r_.device() +
                           " (out of device memory?)");
        cuda_ok(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
        inputs_.resize(r_.spec().inputs.size());
        outputs_.resize(r_.spec().outputs.size());
    }

    ~TrtContext() override {
        context_.reset();
        for (auto& b : inputs_) b.release();
        for (auto& b : outputs_) b.release();
        if (stream_) cudaStreamDestroy(stream_);
    }

    std::vector<Tensor> run(const std::vector<View>& inputs) override {
        const ModelSpec& spec = r_.spec();
        const int64_t n = check_inputs(spec, inputs);
        const std::string what = "model '" + spec.name + "' on " + r_.device();
        cuda_ok(cudaSetDevice(r_.index()), what);
        for (size_t i = 0; i < inputs.size(); ++i) {
            const char* name = spec.inputs[i].name.c_str();
            const size_t bytes = size_t(numel(inputs[i].shape)) * sizeof(float);
            if (!context_->setInputShape(name, dims_of(inputs[i].shape)))
                throw RunError(what + ": input shape " + shape_str(inputs[i].shape) + " is outside the engine's profile");
            inputs_[i].reserve(bytes, what);
            std::memcpy(inputs_[i].host, inputs[i].data, bytes);
            cuda_ok(cudaMemcpyAsync(inputs_[i].device, inputs_[i].host, bytes, cudaMemcpyHostToDevice, stream_), what);
            context_->setTensorAddress(name, inputs_[i].device);
        }
        std::vector<Tensor> out(spec.outputs.size());
        for (size_t j = 0; j < out.size(); ++j) {
            const char* name = spec.outputs[j].c_str();
            out[j].shape = shape_of(context_->getTensorShape(name));
            outputs_[j].reserve(size_t(numel(out[j].shape)) * sizeof(float), what);
            context_->setTensorAddress(name, outputs_[j].device);
        }
        if (!context_->enqueueV3(stream_)) throw RunError(what + ": enqueueV3 failed (TensorRT's log says why)");
        for (size_t j = 0; j < out.size(); ++j)
            cuda_ok(cudaMemcpyAsync(outputs_[j].host, outputs_[j].device, size_t(numel(out[j].shape)) * sizeof(float),
                                    cudaMemcpyDeviceToHost, stream_),
                    what);
        cuda_ok(cudaStreamSynchronize(stream_), what);
        for (size_t j = 0; j < out.size(); ++j) {
            const float* h = static_cast<const float*>(outputs_[j].host);
            out[j].data.assign(h, h + numel(out[j].shape));
        }
        (void)n;
        return out;
    }

private:
    TrtRunner& r_;
    Owned<nvinfer1::IExecutionContext> context_;
    cudaStream_t stream_ = nullptr;
    std::vector<Buffers> inputs_, outputs_;
};

std::unique_ptr<IContext> TrtRunner::create_context() { return std::make_unique<TrtContext>(*this); }

}  // namespace

std::shared_ptr<IRunner> make_tensorrt_runner(const ModelSpec& spec, const RunnerOptions& options) {
    return std::make_shared<TrtRunner>(spec, options);
}

}  // namespace facecore::engine
