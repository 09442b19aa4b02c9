// The LibTorch runner: TorchScript files (tools/build_engines.py converts our ONNX models) on the
// cpu or on cuda:N. On CUDA each context owns a stream from libtorch's pool, stages inputs in pinned
// host memory (libtorch's caching host allocator reuses it), pads a batch up to its bucket, runs
// fp16 on sm_70 and newer unless told fp32, and replays one CUDA graph per bucket for models with
// fixed shapes, captured on that bucket's third run (Pool::warm runs each bucket three times).
// A model that fails its fp16 probe at load (constants left fp32 by the conversion) runs fp32
// under "auto" and is refused under "fp16".
// Threading: the module is shared by the contexts (TorchScript's forward is reentrant); a context
// is used by one thread at a time.
#include <torch/script.h>

#include <cstdio>
#include <cstring>
#include <map>

#ifdef FACECORE_TORCH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

#include "runners.h"

namespace facecore::engine {

namespace {

std::string message(const c10::Error& e) { return e.what_without_backtrace(); }

class TorchRunner : public IRunner {
public:
    TorchRunner(ModelSpec spec, const RunnerOptions& options) : spec_(std::move(spec)) {
        const int index = parse_device(options.device);
        if (index >= 0) {
#ifndef FACECORE_TORCH_CUDA
            throw Error("this build's libtorch has no CUDA: run on 'cpu', or build against a CUDA torch");
#else
            FC_REQUIRE(index < cuda_device_count(),
                       "no CUDA device " + std::to_string(index) + " (" +
                           std::to_string(cuda_device_count()) + " found)");
            cudaDeviceProp prop{};
            if (cudaGetDeviceProperties(&prop, index) != cudaSuccess)
                throw RunError("cannot read the properties of cuda:" + std::to_string(index));
            half_ = options.precision == "fp16" || (options.precision == "auto" && prop.major >= 7);
            graphs_ = options.cuda_graphs && fixed_shapes(spec_);
#endif
        } else {
            FC_REQUIRE(options.precision != "fp16", "fp16 runs on CUDA devices only, not on the cpu");
        }
        device_ = index >= 0 ? torch::Device(torch::kCUDA, c10::DeviceIndex(index)) : torch::Device(torch::kCPU);
        load();
        if (half_ && !runs_in_half()) {
            // A graph whose constants stay fp32 (mixed types in one op): fp32 it is, said once.
            if (options.precision == "fp16")
                throw RunError("model '" + spec_.name + "' does not run in fp16 on " + device_.str());
            std::fprintf(stderr, "facecore: model '%s' runs fp32 on %s (it fails in fp16)\n", spec_.name.c_str(),
                         device_.str().c_str());
            half_ = false;
            load();
        }
    }

    const ModelSpec& spec() const override { return spec_; }
    std::string kind() const override { return "libtorch"; }
    std::string device() const override { return device_.str(); }
    std::string precision() const override { return half_ ? "fp16" : "fp32"; }
    std::unique_ptr<IContext> create_context() override;

    torch::jit::Module& module() { return module_; }
    const torch::Device& torch_device() const { return device_; }
    bool half() const { return half_; }
    bool graphs() const { return graphs_; }

private:
    void load() {
        try {
            module_ = torch::jit::load(spec_.path, device_);
            module_.eval();
            if (half_) module_.to(torch::kHalf);
        } catch (const c10::Error& e) {
            throw RunError("cannot load model '" + spec_.name + "' from " + spec_.path + " on " + device_.str() +
                           ": " + message(e));
        }
    }

    // One fp16 forward of zeros (batch 1; 48 for a free dimension): does the graph take half inputs?
    bool runs_in_half() {
        try {
            c10::InferenceMode guard;
            std::vector<c10::IValue> args;
            for (const auto& in : spec_.inputs) {
                std::vector<int64_t> shape = in.shape;
                for (int64_t& d : shape) d = d < 0 ? 48 : d;
                shape[0] = 1;
                args.emplace_back(torch::zeros(shape, torch::TensorOptions().device(device_).dtype(torch::kHalf)));
            }
            module_.forward(args);
            return true;
        } catch (const c10::Error&) {
            return false;
        }
    }

    ModelSpec spec_;
    torch::Device device_{torch::kCPU};
    torch::jit::Module module_;
    bool half_ = false;
    bool graphs_ = false;
};

// The tensors of a forward's result: a tensor, or a tuple or list of them.
std::vector<at::Tensor> tensors_of(const c10::IValue& v, const std::string& model) {
    std::vector<at::Tensor> out;
    if (v.isTensor()) {
        out.push_back(v.toTensor());
    } else if (v.isTuple()) {
        for (const auto& e : v.toTupleRef().elements()) out.push_back(e.toTensor());
    } else if (v.isList()) {
        for (const c10::IValue& e : v.toListRef()) out.push_back(e.toTensor());
    } else {
        throw RunError("model '" + model + "' returned a " + v.tagKind() + ", not tensors");
    }
    return out;
}

// The first n rows of float32 cpu tensors, as engine Tensors.
std::vector<Tensor> to_host(const std::vector<at::Tensor>& outs, int64_t n) {
    std::vector<Tensor> result;
    for (const at::Tensor& t0 : outs) {
        const at::Tensor t = t0.narrow(0, 0, n).contiguous();
        Tensor r;
        r.shape.assign(t.sizes().begin(), t.sizes().end());
        r.data.resize(size_t(t.numel()));
        std::memcpy(r.data.data(), t.const_data_ptr<float>(), r.data.size() * sizeof(float));
        result.push_back(std::move(r));
    }
    return result;
}

class TorchContext : public IContext {
public:
    explicit TorchContext(TorchRunner& runner) : r_(runner) {
#ifdef FACECORE_TORCH_CUDA
        if (r_.torch_device().is_cuda())
            stream_.emplace(c10::cuda::getStreamFromPool(/*isHighPriority=*/false, r_.torch_device().index()));
#endif
    }

    std::vector<Tensor> run(const std::vector<View>& inputs) override {
        const int64_t n = check_inputs(r_.spec(), inputs);
        try {
            c10::InferenceMode guard;
#ifdef FACECORE_TORCH_CUDA
            if (stream_) return run_cuda(inputs, n);
#endif
            std::vector<at::Tensor> views;
            for (const View& v : inputs)  // the caller's memory, not copied (forward does not write it)
                views.push_back(torch::from_blob(const_cast<float*>(v.data), v.shape, torch::kFloat));
            return to_host(forward(views), n);
        } catch (const c10::Error& e) {
            throw RunError("model '" + r_.spec().name + "' on " + r_.device() + ": " + message(e));
        }
    }

#ifdef FACECORE_TORCH_CUDA
private:
    struct Graph {
        at::cuda::CUDAGraph graph;
        std::vector<at::Tensor> inputs;   // float32, on the device: what replay reads
        std::vector<at::Tensor> outputs;  // float32, on the device: what replay writes
    };

    // Inputs in pinned host memory, padded with zeros to `rows` (libtorch's caching host allocator
    // hands the same blocks back once the copies that read them are done).
    std::vector<at::Tensor> stage(const std::vector<View>& inputs, int64_t n, int64_t rows) {
        std::vector<at::Tensor> out;
        for (const View& v : inputs) {
            std::vector<int64_t> shape = v.shape;
            shape[0] = rows;
            at::Tensor host = torch::empty(shape, torch::TensorOptions().dtype(torch::kFloat).pinned_memory(true));
            const size_t bytes = size_t(numel(v.shape)) * sizeof(float);
            std::memcpy(host.data_ptr<float>(), v.data, bytes);
            if (rows > n) std::memset(reinterpret_cast<char*>(host.data_ptr<float>()) + bytes, 0, host.nbytes() - bytes);
            out.push_back(host);
        }
        return out;
    }

    std::vector<at::Tensor> upload(const std::vector<View>& inputs, int64_t n, int64_t rows) {
        std::vector<at::Tensor> out;
        for (const at::Tensor& host : stage(inputs, n, rows))
            out.push_back(host.to(r_.torch_device(), /*non_blocking=*/true));
        return out;
    }

    std::vector<Tensor> download(const std::vector<at::Tensor>& outs, int64_t n) {
        std::vector<at::Tensor> host;
        for (const at::Tensor& t : outs) {
            at::Tensor h = torch::empty(t.sizes(), torch::TensorOptions().dtype(torch::kFloat).pinned_memory(true));
            h.copy_(t, /*non_blocking=*/true);
            host.push_back(h);
        }
        stream_->synchronize();
        return to_host(host, n);
    }

    std::vector<Tensor> run_cuda(const std::vector<View>& inputs, int64_t n) {
        c10::cuda::CUDAStreamGuard on_stream(*stream_);
        // Fixed-shape models run at bucket sizes: few shapes for TorchScript to specialise, one graph each.
        int64_t rows = n;
        if (fixed_shapes(r_.spec()))
            for (int b : batch_buckets(r_.spec().max_batch))
                if (b >= n) {
                    rows = b;
                    break;
                }
        if (!r_.graphs()) return download(forward(upload(inputs, n, rows)), n);

        auto found = graphs_.find(rows);
        if (found != graphs_.end() && found->second) {
            Graph& g = *found->second;
            std::vector<at::Tensor> host = stage(inputs, n, rows);
            for (size_t i = 0; i < host.size(); ++i) g.inputs[i].copy_(host[i], /*non_blocking=*/true);
            g.graph.replay();
            return download(g.outputs, n);
        }
        if (found == graphs_.end() && ++eager_runs_[rows] >= 3) return download(capture(rows, upload(inputs, n, rows)), n);
        return download(forward(upload(inputs, n, rows)), n);
    }

    // Captures forward at `rows`; on failure that bucket stays eager (and says why once).
    std::vector<at::Tensor> capture(int64_t rows, std::vector<at::Tensor> inputs) {
        auto g = std::make_unique<Graph>();
        g->inputs = std::move(inputs);
        stream_->synchronize();
        try {
            g->graph.capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
            try {
                g->outputs = forward(g->inputs);
            } catch (...) {
                try {
                    g->graph.capture_end();
                } catch (...) {
                }
                throw;
            }
            g->graph.capture_end();
            g->graph.replay();
        } catch (const c10::Error& e) {
            (void)cudaGetLastError();
            std::fprintf(stderr, "facecore: model '%s' on %s runs batch %lld without a CUDA graph: %s\n",
                         r_.spec().name.c_str(), r_.device().c_str(), static_cast<long long>(rows),
                         message(e).c_str());
            graphs_[rows] = nullptr;
            return forward(g->inputs);
        }
        std::vector<at::Tensor> outs = g->outputs;
        graphs_[rows] = std::move(g);
        return outs;
    }

    std::optional<c10::cuda::CUDAStream> stream_;
    std::map<int64_t, std::unique_ptr<Graph>> graphs_;  // by bucket; null: capture failed
    std::map<int64_t, int> eager_runs_;
#endif

private:
    // The module on `inputs` (half when the runner runs fp16), its outputs as float32.
    std::vector<at::Tensor> forward(const std::vector<at::Tensor>& inputs) {
        std::vector<c10::IValue> args;
        for (const at::Tensor& t : inputs) args.emplace_back(r_.half() ? t.to(torch::kHalf) : t);
        std::vector<at::Tensor> outs = tensors_of(r_.module().forward(args), r_.spec().name);
        for (at::Tensor& t : outs) t = t.to(torch::kFloat);
        return outs;
    }

    TorchRunner& r_;
};

std::unique_ptr<IContext> TorchRunner::create_context() { return std::make_unique<TorchContext>(*this); }

}  // namespace

std::shared_ptr<IRunner> make_torch_runner(const ModelSpec& spec, const RunnerOptions& options) {
    return std::make_shared<TorchRunner>(spec, options);
}

}  // namespace facecore::engine
