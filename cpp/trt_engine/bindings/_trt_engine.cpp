// facecore._trt_engine: argument checking and conversion only. Arrays are checked with the GIL held;
// loading, warming and every run release it. The public API, docs and types are in
// python/facecore/runtime/gpu.py and _trt_engine.pyi. Caller mistakes raise ValueError / TypeError,
// failed runs RuntimeError (only for the callers whose items were in the failed run).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "facecore/engine/batcher.h"
#include "facecore/engine/pool.h"
#include "facecore/engine/runner.h"

namespace py = pybind11;
using namespace facecore::engine;

namespace {

py::array to_numpy(Tensor&& t) {
    auto* owned = new std::vector<float>(std::move(t.data));
    py::capsule free_it(owned, [](void* p) { delete static_cast<std::vector<float>*>(p); });
    return py::array_t<float>(t.shape, owned->data(), free_it);
}

class Model {
public:
    Model(const std::string& name, const std::string& path, const std::vector<std::pair<std::string, Shape>>& inputs,
          const std::vector<std::string>& outputs, const std::string& runner, const std::vector<std::string>& devices,
          int contexts, int max_batch, long max_wait_us, const std::string& precision, bool cuda_graphs) {
        if (devices.empty()) throw py::value_error("devices must name at least one device");
        if (max_wait_us < 0) throw py::value_error("max_wait_us must be >= 0");
        ModelSpec spec;
        spec.name = name;
        spec.path = path;
        for (const auto& [in_name, shape] : inputs) spec.inputs.push_back(TensorSpec{in_name, shape});
        spec.outputs = outputs;
        spec.max_batch = max_batch;
        RunnerOptions options;
        options.precision = precision;
        options.cuda_graphs = cuda_graphs;
        py::gil_scoped_release release;
        std::vector<std::shared_ptr<IRunner>> runners;
        for (const auto& device : devices) {
            options.device = device;
            runners.push_back(make_runner(runner, spec, options));
        }
        pool_ = std::make_shared<Pool>(std::move(runners), contexts);
        batcher_ = std::make_shared<Batcher>(pool_, max_batch, std::chrono::microseconds(max_wait_us));
    }

    std::vector<py::array> run(const std::vector<py::array>& arrays, bool may_wait) {
        std::shared_ptr<Batcher> batcher = live();
        std::vector<View> views;
        for (size_t i = 0; i < arrays.size(); ++i) {
            const py::array& a = arrays[i];
            if (!a.dtype().equal(py::dtype::of<float>()))
                throw py::type_error("input " + std::to_string(i) + " of model '" + pool_->spec().name +
                                     "' must be float32, got " + std::string(py::str(a.dtype())));
            if (!(a.flags() & py::array::c_style))
                throw py::value_error("input " + std::to_string(i) + " of model '" + pool_->spec().name +
                                      "' must be C-contiguous");
            views.push_back(View{static_cast<const float*>(a.data()), Shape(a.shape(), a.shape() + a.ndim())});
        }
        std::vector<Tensor> outs;
        {
            py::gil_scoped_release release;
            outs = batcher->run(views, may_wait);
            batcher.reset();  // the last owner after close() joins the workers here, without the GIL
        }
        std::vector<py::array> result;
        for (Tensor& t : outs) result.push_back(to_numpy(std::move(t)));
        return result;
    }

    void warm(int rounds) {
        std::shared_ptr<Batcher> keep = live();
        py::gil_scoped_release release;
        pool_->warm(rounds);
    }

    py::dict stats() const {
        const BatcherStats s = live()->stats();
        py::dict d;
        d["requests"] = s.requests;
        d["items"] = s.items;
        d["runs"] = s.runs;
        d["merged"] = s.merged;
        d["failed"] = s.failed;
        d["busy"] = pool_->busy();
        d["contexts"] = pool_->size();
        return d;
    }

    void close() {
        std::shared_ptr<Batcher> last = std::move(batcher_);
        py::gil_scoped_release release;
        last.reset();
    }

    std::string name() const { return pool_->spec().name; }
    std::string kind() const { return pool_->runners().front()->kind(); }
    std::string precision() const { return pool_->runners().front()->precision(); }
    int max_batch() const { return pool_->spec().max_batch; }
    std::vector<std::string> devices() const {
        std::vector<std::string> out;
        for (const auto& r : pool_->runners()) out.push_back(r->device());
        return out;
    }
    std::vector<bool> devices_up() const { return pool_->devices_up(); }

private:
    std::shared_ptr<Batcher> live() const {
        std::shared_ptr<Batcher> b = batcher_;
        if (!b) throw py::value_error("model '" + pool_->spec().name + "' is closed");
        return b;
    }

    std::shared_ptr<Pool> pool_;
    std::shared_ptr<Batcher> batcher_;
};

std::vector<std::string> cuda_devices() {
    std::vector<std::string> out;
    for (int i = 0, n = cuda_device_count(); i < n; ++i) out.push_back(cuda_device_name(i));
    return out;
}

}  // namespace

PYBIND11_MODULE(_trt_engine, m) {
    m.doc() = "FaceCore's engine pool and dynamic batcher over LibTorch / TensorRT runners (private)";
    m.def("runners", &available_runners);
    m.def("cuda_devices", &cuda_devices);
    py::class_<Model>(m, "Model")
        .def(py::init<const std::string&, const std::string&, const std::vector<std::pair<std::string, Shape>>&,
                      const std::vector<std::string>&, const std::string&, const std::vector<std::string>&, int, int,
                      long, const std::string&, bool>(),
             py::arg("name"), py::arg("path"), py::arg("inputs"), py::arg("outputs"), py::arg("runner"),
             py::arg("devices"), py::arg("contexts"), py::arg("max_batch"), py::arg("max_wait_us"),
             py::arg("precision"), py::arg("cuda_graphs"))
        .def("run", &Model::run, py::arg("inputs"), py::arg("may_wait"))
        .def("warm", &Model::warm, py::arg("rounds") = 3)
        .def("stats", &Model::stats)
        .def("close", &Model::close)
        .def_property_readonly("name", &Model::name)
        .def_property_readonly("kind", &Model::kind)
        .def_property_readonly("precision", &Model::precision)
        .def_property_readonly("max_batch", &Model::max_batch)
        .def_property_readonly("devices", &Model::devices)
        .def_property_readonly("devices_up", &Model::devices_up);
}
