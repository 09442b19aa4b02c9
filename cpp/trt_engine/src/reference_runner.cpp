// The reference runner: a fixed model in plain C++, for testing the pool and batcher anywhere.
// Output 0 is 2 * x + 1 of input 0 (same shape); output j >= 1 is (N, 1): j * the sum of item i's
// input 0. So every item's outputs depend on that item alone, and a mixed-up batch shows.
// Options in the model path, comma-separated: delay_us=N (sleep per run, as a device would take),
// fail=nan (a run with a NaN in its inputs throws), fail=always.
#include <chrono>
#include <cmath>
#include <sstream>
#include <thread>

#include "runners.h"

namespace facecore::engine {

int parse_device(const std::string& device) {
    if (device == "cpu") return -1;
    if (device == "cuda") return 0;
    if (device.rfind("cuda:", 0) == 0) {
        const std::string idx = device.substr(5);
        if (!idx.empty() && idx.size() < 4 && idx.find_first_not_of("0123456789") == std::string::npos)
            return std::stoi(idx);
    }
    throw Error("device must be 'cpu' or 'cuda:N', got '" + device + "'");
}

namespace {

struct Options {
    long delay_us = 0;
    std::string fail;
};

Options parse_options(const std::string& path) {
    Options o;
    std::stringstream ss(path);
    std::string item;
    while (std::getline(ss, item, ',')) {
        if (item.empty()) continue;
        const auto eq = item.find('=');
        const std::string key = item.substr(0, eq), value = eq == std::string::npos ? "" : item.substr(eq + 1);
        if (key == "delay_us") {
            FC_REQUIRE(!value.empty() && value.find_first_not_of("0123456789") == std::string::npos,
                       "reference runner: delay_us must be a non-negative integer, got '" + value + "'");
            o.delay_us = std::stol(value);
        } else if (key == "fail" && (value == "nan" || value == "always")) {
            o.fail = value;
        } else {
            throw Error("reference runner: unknown option '" + item +
                        "' (it takes delay_us=N, fail=nan, fail=always)");
        }
    }
    return o;
}

class ReferenceRunner;

class ReferenceContext : public IContext {
public:
    explicit ReferenceContext(const ReferenceRunner& runner) : runner_(runner) {}
    std::vector<Tensor> run(const std::vector<View>& inputs) override;

private:
    const ReferenceRunner& runner_;
};

class ReferenceRunner : public IRunner {
public:
    ReferenceRunner(ModelSpec spec, Options options) : spec_(std::move(spec)), options_(options) {}
    const ModelSpec& spec() const override { return spec_; }
    std::string kind() const override { return "reference"; }
    std::string device() const override { return "cpu"; }
    std::string precision() const override { return "fp32"; }
    std::unique_ptr<IContext> create_context() override { return std::make_unique<ReferenceContext>(*this); }
    const Options& options() const { return options_; }

private:
    ModelSpec spec_;
    Options options_;
};

std::vector<Tensor> ReferenceContext::run(const std::vector<View>& inputs) {
    const int64_t n = check_inputs(runner_.spec(), inputs);
    const Options& o = runner_.options();
    if (o.delay_us) std::this_thread::sleep_for(std::chrono::microseconds(o.delay_us));
    if (o.fail == "always") throw RunError("model '" + runner_.spec().name + "': the reference runner fails (fail=always)");
    const View& x = inputs[0];
    const int64_t per = numel(x.shape) / n;
    if (o.fail == "nan")
        for (const View& v : inputs)
            for (int64_t i = 0; i < numel(v.shape); ++i)
                if (std::isnan(v.data[i]))
                    throw RunError("model '" + runner_.spec().name + "': NaN in a batch of " + std::to_string(n));
    std::vector<Tensor> out(runner_.spec().outputs.size());
    out[0].shape = x.shape;
    out[0].data.resize(size_t(n * per));
    for (int64_t i = 0; i < n * per; ++i) out[0].data[size_t(i)] = 2.0f * x.data[i] + 1.0f;
    for (size_t j = 1; j < out.size(); ++j) {
        out[j].shape = {n, 1};
        out[j].data.resize(size_t(n));
        for (int64_t b = 0; b < n; ++b) {
            double s = 0;
            for (int64_t i = 0; i < per; ++i) s += x.data[b * per + i];
            out[j].data[size_t(b)] = float(double(j) * s);
        }
    }
    return out;
}

}  // namespace

std::shared_ptr<IRunner> make_reference_runner(const ModelSpec& spec, const RunnerOptions& options) {
    FC_REQUIRE(parse_device(options.device) < 0,
               "the reference runner runs on the cpu, not '" + options.device + "'");
    return std::make_shared<ReferenceRunner>(spec, parse_options(spec.path));
}

}  // namespace facecore::engine
