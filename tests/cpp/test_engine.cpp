// C++ tests of the engine pool and the dynamic batcher (ctest), with real computation on the CPU:
// the reference runner everywhere, and the LibTorch runner on a TorchScript model made here when
// the build has libtorch. `--cuda` (ctest label gpu, where the build has a CUDA runner) runs the
// LibTorch checks on cuda:0 too: fp32, fp16 and CUDA graphs. Concurrency from several threads,
// merging, splitting, several devices, and errors that reach only the callers of a failed run.
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "facecore/engine/batcher.h"
#include "facecore/engine/pool.h"
#include "facecore/engine/runner.h"

#ifdef FACECORE_HAVE_TORCH
#include <torch/script.h>
#endif

#include "expect.h"

using namespace facecore::engine;
using namespace std::chrono_literals;

namespace {

template <class E>
bool throws(const std::function<void()>& f, const std::string& needle = "") {
    try {
        f();
    } catch (const E& e) {
        return needle.empty() || std::string(e.what()).find(needle) != std::string::npos;
    } catch (...) {
        return false;
    }
    return false;
}

ModelSpec reference_spec(const std::string& options = "", int max_batch = 8, Shape item = {3, 2}) {
    ModelSpec s;
    s.name = "toy";
    s.path = options;
    Shape shape = {-1};
    shape.insert(shape.end(), item.begin(), item.end());
    s.inputs = {TensorSpec{"x", shape}};
    s.outputs = {"affine", "sum"};
    s.max_batch = max_batch;
    return s;
}

std::shared_ptr<Pool> reference_pool(const std::string& options, int contexts, int max_batch = 8, Shape item = {3, 2}) {
    return std::make_shared<Pool>(
        std::vector<std::shared_ptr<IRunner>>{make_runner("reference", reference_spec(options, max_batch, item), {})},
        contexts);
}

// Items whose values say who made them: caller c, request r, item i.
std::vector<float> items(int caller, int request, int64_t n, int64_t per) {
    std::vector<float> v(size_t(n * per));
    for (int64_t i = 0; i < n; ++i)
        for (int64_t k = 0; k < per; ++k) v[size_t(i * per + k)] = float(caller * 1000 + request * 10 + i) + 0.01f * float(k);
    return v;
}

// The reference model's outputs for `x` (n items of `per` values).
bool reference_ok(const std::vector<Tensor>& out, const std::vector<float>& x, int64_t n, int64_t per) {
    if (out.size() != 2 || out[0].shape[0] != n || out[1].shape != Shape{n, 1}) return false;
    for (int64_t i = 0; i < n * per; ++i)
        if (out[0].data[size_t(i)] != 2.0f * x[size_t(i)] + 1.0f) return false;
    for (int64_t b = 0; b < n; ++b) {
        double s = 0;
        for (int64_t k = 0; k < per; ++k) s += x[size_t(b * per + k)];
        if (std::fabs(out[1].data[size_t(b)] - s) > 1e-3 * std::fabs(s) + 1e-4) return false;
    }
    return true;
}

void test_inputs_checked() {
    auto pool = reference_pool("", 1);
    Batcher batcher(pool, 8, 0us);
    std::vector<float> x(12);
    EXPECT(throws<Error>([&] { batcher.run({View{x.data(), {2, 3, 3}}}); }, "input 'x' must have shape (?, 3, 2)"),
          "wrong item shape");
    EXPECT(throws<Error>([&] { batcher.run({View{x.data(), {2, 6}}}); }, "must be 3-D"), "wrong rank");
    EXPECT(throws<Error>([&] { batcher.run({}); }, "takes 1 input(s), got 0"), "no input");
    EXPECT(throws<Error>([&] { batcher.run({View{x.data(), {0, 3, 2}}}); }, "empty batch"), "empty batch");
    EXPECT(throws<Error>([&] { make_runner("nonesuch", reference_spec(), {}); }, "not in this build"), "runner");
    EXPECT(throws<Error>([&] { make_runner("reference", reference_spec("delay_us=x"), {}); }, "delay_us"), "opt");
    EXPECT(throws<Error>([&] { Batcher(pool, 9, 0us); }, "max_batch must be in 1..8"), "max_batch");
    RunnerOptions cuda;
    cuda.device = "gpu0";
    EXPECT(throws<Error>([&] { make_runner("reference", reference_spec(), cuda); }, "device must be"), "device");
    EXPECT(batch_buckets(8) == std::vector<int>({1, 2, 4, 8}) && batch_buckets(12) == std::vector<int>({1, 2, 4, 8, 12}),
          "buckets");
}

void test_pool_leases() {
    auto pool = reference_pool("", 2);
    EXPECT(pool->size() == 2 && pool->busy() == 0, "size %zu", pool->size());
    {
        Pool::Lease a = pool->acquire();
        Pool::Lease b = pool->acquire();
        EXPECT(&a.context() != &b.context(), "two leases, one context");
        EXPECT(pool->busy() == 2, "busy %zu", pool->busy());
        std::atomic<bool> got{false};
        std::thread t([&] {
            Pool::Lease c = pool->acquire();  // blocks until a lease is returned
            got = true;
        });
        std::this_thread::sleep_for(30ms);
        EXPECT(!got, "a third lease while both contexts are out");
        { Pool::Lease moved = std::move(a); }  // returned when the moved-to lease ends
        t.join();
        EXPECT(got, "the waiter got the returned context");
    }
    EXPECT(pool->busy() == 0, "every lease returned, busy %zu", pool->busy());
}

void test_pool_devices() {
    // Two "devices": leases spread over both; one that keeps failing is taken out.
    auto spec = reference_spec();
    auto bad = reference_spec("fail=always");
    auto pool = std::make_shared<Pool>(
        std::vector<std::shared_ptr<IRunner>>{make_runner("reference", spec, {}), make_runner("reference", bad, {})}, 2, 3);
    {
        Pool::Lease a = pool->acquire();
        Pool::Lease b = pool->acquire();
        EXPECT(&a.runner() != &b.runner(), "two leases on one device while the other is idle");
    }
    Batcher batcher(pool, 8, 0us);
    std::vector<float> x = items(0, 0, 1, 6);
    int failed = 0, ok = 0;
    for (int i = 0; i < 40; ++i) {
        try {
            ok += reference_ok(batcher.run({View{x.data(), {1, 3, 2}}}), x, 1, 6);
        } catch (const RunError&) {
            ++failed;
        }
    }
    EXPECT(pool->devices_up() == std::vector<bool>({true, false}), "the failing device is still in");
    EXPECT(failed >= 1 && failed <= 3 && ok == 40 - failed, "failed %d ok %d", failed, ok);
}

void test_batcher_concurrent(const std::string& options, std::chrono::microseconds wait, bool expect_merges) {
    const int callers = 8, requests = 40, max_batch = 8;
    auto pool = reference_pool(options, 2, max_batch);
    Batcher batcher(pool, max_batch, wait);
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int c = 0; c < callers; ++c)
        threads.emplace_back([&, c] {
            for (int r = 0; r < requests; ++r) {
                const int64_t n = 1 + (c + r) % 3;
                std::vector<float> x = items(c, r, n, 6);
                if (!reference_ok(batcher.run({View{x.data(), {n, 3, 2}}}), x, n, 6)) ++wrong;
            }
        });
    for (auto& t : threads) t.join();
    const BatcherStats s = batcher.stats();
    EXPECT(wrong == 0, "%d requests got outputs that are not theirs (%s)", int(wrong), options.c_str());
    EXPECT(s.requests == uint64_t(callers * requests) && s.failed == 0, "requests %llu",
          (unsigned long long)s.requests);
    if (expect_merges)
        EXPECT(s.merged > 0 && s.runs < s.requests, "no merging: %llu runs for %llu requests",
              (unsigned long long)s.runs, (unsigned long long)s.requests);
}

void test_batcher_shapes_and_split() {
    // Dynamic item shapes (like P-Net's pyramid levels) merge only with their own kind.
    auto pool = reference_pool("delay_us=2000", 1, 4, {3, -1});
    Batcher batcher(pool, 4, 20ms);
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int c = 0; c < 6; ++c)
        threads.emplace_back([&, c] {
            const int64_t w = 2 + c % 2;
            for (int r = 0; r < 10; ++r) {
                std::vector<float> x = items(c, r, 1, 3 * w);
                if (!reference_ok(batcher.run({View{x.data(), {1, 3, w}}}), x, 1, 3 * w)) ++wrong;
            }
        });
    for (auto& t : threads) t.join();
    EXPECT(wrong == 0, "%d mixed-shape requests wrong", int(wrong));
    // A request over max_batch runs in slices, its outputs joined in order.
    std::vector<float> x = items(1, 1, 11, 6);
    auto out = batcher.run({View{x.data(), {11, 3, 2}}});
    EXPECT(reference_ok(out, x, 11, 6), "split request");
}

void test_batcher_errors() {
    // A NaN run fails; the callers of that run see it, a caller of another run does not.
    auto pool = reference_pool("fail=nan,delay_us=20000", 1, 8);
    Batcher batcher(pool, 8, 30ms);
    std::vector<float> good = items(1, 0, 1, 6), bad = items(2, 0, 1, 6), later = items(3, 0, 2, 6);
    bad[3] = std::nanf("");
    std::atomic<int> good_failed{0}, bad_failed{0};
    std::thread g([&] {
        if (throws<RunError>([&] { batcher.run({View{good.data(), {1, 3, 2}}}); }, "NaN")) ++good_failed;
    });
    std::this_thread::sleep_for(5ms);
    std::thread b([&] {
        if (throws<RunError>([&] { batcher.run({View{bad.data(), {1, 3, 2}}}); }, "NaN")) ++bad_failed;
    });
    g.join();
    b.join();
    EXPECT(bad_failed == 1, "the NaN caller did not get the error");
    EXPECT(good_failed == 1, "the caller merged with it did not get the error (merged %llu)",
          (unsigned long long)batcher.stats().merged);
    EXPECT(reference_ok(batcher.run({View{later.data(), {2, 3, 2}}}, false), later, 2, 6), "a later run failed");
    const BatcherStats s = batcher.stats();
    EXPECT(s.runs == 2 && s.failed == 1 && s.merged == 1, "runs %llu failed %llu", (unsigned long long)s.runs,
          (unsigned long long)s.failed);
}

void test_may_wait() {
    // A request that may not wait is dispatched at once, even with a long max_wait.
    auto pool = reference_pool("", 1, 8);
    Batcher batcher(pool, 8, 500ms);
    std::vector<float> x = items(0, 0, 1, 6);
    const auto t0 = std::chrono::steady_clock::now();
    batcher.run({View{x.data(), {1, 3, 2}}}, false);
    EXPECT(std::chrono::steady_clock::now() - t0 < 200ms, "a lone request waited for company");
}

#ifdef FACECORE_HAVE_TORCH
// A TorchScript model made here: a 3x3 convolution and a per-item sum, two outputs.
struct TorchToy {
    std::string path;
    torch::Tensor w = torch::randn({4, 3, 3, 3}), b = torch::randn({4});
    TorchToy() {
        char tmpl[] = "/tmp/facecore_toy_XXXXXX";
        const int fd = mkstemp(tmpl);
        EXPECT(fd >= 0, "mkstemp");
        path = tmpl;
        torch::jit::Module m("Toy");
        m.register_parameter("w", w, false);
        m.register_parameter("b", b, false);
        m.define(R"(
def forward(self, x):
    y = torch.conv2d(x, self.w, self.b, [1, 1], [1, 1])
    return torch.relu(y), x.sum(dim=[1, 2, 3]).unsqueeze(1)
)");
        m.save(path);
    }
    ~TorchToy() { std::remove(path.c_str()); }
    ModelSpec spec(int max_batch) const {
        ModelSpec s;
        s.name = "toy";
        s.path = path;
        s.inputs = {TensorSpec{"x", {-1, 3, 8, 8}}};
        s.outputs = {"features", "sum"};
        s.max_batch = max_batch;
        return s;
    }
    std::vector<torch::Tensor> expected(const std::vector<float>& x, int64_t n) const {
        torch::Tensor t = torch::from_blob(const_cast<float*>(x.data()), {n, 3, 8, 8}).clone();
        return {torch::relu(torch::conv2d(t, w, b, 1, 1)), t.sum({1, 2, 3}).unsqueeze(1)};
    }
};

float max_diff(const Tensor& got, const torch::Tensor& want) {
    torch::Tensor g = torch::from_blob(const_cast<float*>(got.data.data()), got.shape).clone();
    if (g.sizes() != want.sizes()) return INFINITY;
    return (g - want).abs().max().item<float>();
}

void test_torch(const std::string& device, const std::string& precision, bool graphs) {
    TorchToy toy;
    RunnerOptions options;
    options.device = device;
    options.precision = precision;
    options.cuda_graphs = graphs;
    auto runner = make_runner("libtorch", toy.spec(8), options);
    EXPECT(runner->kind() == "libtorch" && runner->device() == device, "%s", runner->device().c_str());
    auto pool = std::make_shared<Pool>(std::vector<std::shared_ptr<IRunner>>{runner}, 2);
    pool->warm();
    Batcher batcher(pool, 8, 2ms);
    const float tol = runner->precision() == "fp16" ? 5e-2f : 1e-4f;
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int c = 0; c < 4; ++c)
        threads.emplace_back([&, c] {
            for (int r = 0; r < 12; ++r) {
                const int64_t n = 1 + (c + r) % 3;
                std::vector<float> x(size_t(n * 3 * 8 * 8));
                for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(float(i + 7 * c + 131 * r));
                auto out = batcher.run({View{x.data(), {n, 3, 8, 8}}});
                auto want = toy.expected(x, n);
                const float d0 = max_diff(out[0], want[0]), d1 = max_diff(out[1], want[1]);
                if (!(d0 <= tol && d1 <= tol * 10)) {
                    std::printf("  %s %s: item diff %g / %g\n", device.c_str(), precision.c_str(), d0, d1);
                    ++wrong;
                }
            }
        });
    for (auto& t : threads) t.join();
    EXPECT(wrong == 0, "libtorch on %s (%s, graphs %d): %d requests off", device.c_str(), precision.c_str(), graphs,
          int(wrong));
    // A run that throws inside TorchScript reaches its caller as RunError (the model's own check).
    std::vector<float> x(3 * 8 * 8);
    EXPECT(throws<Error>([&] { batcher.run({View{x.data(), {1, 3, 8, 9}}}); }, "must have shape"), "bad shape");
    EXPECT(throws<RunError>([&] { make_runner("libtorch", reference_spec("/nonexistent.ts"), options); },
                           "cannot load model"),
          "missing file");
}
#endif

}  // namespace

int main(int argc, char** argv) {
    const bool cuda = argc > 1 && std::string(argv[1]) == "--cuda";
    if (!cuda) {
        test_inputs_checked();
        test_pool_leases();
        test_pool_devices();
        test_batcher_concurrent("", 0us, false);
        test_batcher_concurrent("delay_us=1000", 2ms, true);
        test_batcher_shapes_and_split();
        test_batcher_errors();
        test_may_wait();
#ifdef FACECORE_HAVE_TORCH
        test_torch("cpu", "fp32", false);
#endif
    } else {
#ifdef FACECORE_HAVE_TORCH
        if (cuda_device_count() == 0) {
            std::printf("no CUDA device: skipped\n");
            return 0;
        }
        test_torch("cuda:0", "fp32", false);
        test_torch("cuda:0", "fp32", true);
        test_torch("cuda:0", "fp16", true);
#endif
    }
    std::string runners;
    for (const auto& r : available_runners()) runners += " " + r;
    std::printf("%s: %d failures (runners:%s)\n", failures ? "FAILED" : "OK", failures, runners.c_str());
    return failures ? 1 : 0;
}
