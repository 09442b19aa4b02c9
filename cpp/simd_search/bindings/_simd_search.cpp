// facecore._simd_search: argument checking and conversion only. Shapes, dtypes and contiguity
// are checked with the GIL held; every scan runs with it released. The public API, docs and
// types are in python/facecore/search.py and _simd_search.pyi.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <optional>
#include <stdexcept>
#include <string>

#include "facecore/dispatch.h"
#include "facecore/id_map.h"
#include "facecore/quantize.h"
#include "facecore/scan.h"

namespace py = pybind11;
using namespace facecore;

namespace {

[[noreturn]] void fail(const std::string& msg) { throw py::value_error(msg); }

Elem parse_elem(const std::string& e) {
    if (e == "i8") return Elem::I8;
    if (e == "f16") return Elem::F16;
    if (e == "f32") return Elem::F32;
    fail("kind must be 'i8', 'f16' or 'f32', got '" + e + "'");
}

py::dtype dtype_of(Elem e) {
    return py::dtype(e == Elem::I8 ? "int8" : e == Elem::F16 ? "float16" : "float32");
}

void check(const py::array& a, const char* name, const py::dtype& dt, py::ssize_t ndim) {
    if (!a.dtype().equal(dt))  // equality, not identity: unpickled arrays carry their own dtype object
        throw py::type_error(std::string(name) + " must have dtype " + std::string(py::str(dt)) + ", got " +
                             std::string(py::str(a.dtype())));
    if (a.ndim() != ndim)
        fail(std::string(name) + " must be " + std::to_string(ndim) + "-D, got " + std::to_string(a.ndim()) + "-D");
    if (!(a.flags() & py::array::c_style)) fail(std::string(name) + " must be C-contiguous");
}

const Kernels& kernels(const std::optional<std::string>& level) {
    try {
        return level ? kernels_for(*level) : active_kernels();
    } catch (const std::invalid_argument& e) {
        fail(e.what());
    }
}

py::tuple search(const std::string& kind, const py::list& chunks, const py::array& queries,
                 std::optional<py::array> query_scales, py::ssize_t k, py::ssize_t threads,
                 std::optional<py::array> allow_bits, std::optional<py::array> allow_rows,
                 std::optional<std::string> level) {
    ScanRequest req;
    req.elem = parse_elem(kind);
    req.kernels = &kernels(level);
    const py::dtype row_dt = dtype_of(req.elem);
    check(queries, "queries", req.elem == Elem::I8 ? py::dtype("int8") : py::dtype("float32"), 2);
    req.d = size_t(queries.shape(1));
    req.nq = size_t(queries.shape(0));
    if (req.d == 0) fail("queries must have at least one dimension");
    if (k <= 0) fail("k must be a positive integer, got " + std::to_string(k));
    if (threads < 0) fail("threads must be >= 0 (0 = all cores), got " + std::to_string(threads));
    req.k = size_t(k);
    req.threads = unsigned(threads);

    std::vector<py::array> keep;  // owners of every buffer the scan reads
    int64_t total = 0;
    for (py::handle h : chunks) {
        auto pair = h.cast<py::tuple>();
        if (pair.size() != 2) fail("chunks must be (matrix, scales-or-None) pairs");
        auto m = pair[0].cast<py::array>();
        check(m, "chunk matrix", row_dt, 2);
        if (size_t(m.shape(1)) != req.d)
            fail("queries have dimension " + std::to_string(req.d) + " but the matrix has " +
                 std::to_string(m.shape(1)));
        ChunkView cv{m.data(), nullptr, int64_t(m.shape(0))};
        if (!pair[1].is_none()) {
            if (req.elem != Elem::I8) fail("scales apply to int8 chunks only");
            auto s = pair[1].cast<py::array>();
            check(s, "chunk scales", py::dtype("float32"), 1);
            if (s.shape(0) != m.shape(0)) fail("chunk scales must have one value per row");
            cv.scales = static_cast<const float*>(s.data());
            keep.push_back(s);
        }
        keep.push_back(m);
        total += cv.rows;
        req.chunks.push_back(cv);
    }
    if (query_scales) {
        if (req.elem != Elem::I8) fail("query_scales apply to int8 queries only");
        check(*query_scales, "query_scales", py::dtype("float32"), 1);
        if (size_t(query_scales->shape(0)) != req.nq) fail("query_scales must have one value per query");
        req.query_scales = static_cast<const float*>(query_scales->data());
    }
    if (allow_bits) {
        check(*allow_bits, "allow_bits", py::dtype("uint8"), 1);
        if (allow_bits->shape(0) * 8 < total)
            fail("allow_bits covers " + std::to_string(allow_bits->shape(0) * 8) + " rows, the matrix has " +
                 std::to_string(total));
        req.allow_bits = static_cast<const uint8_t*>(allow_bits->data());
    }
    if (allow_rows) {
        check(*allow_rows, "allow_rows", py::dtype("int64"), 1);
        const auto* r = static_cast<const int64_t*>(allow_rows->data());
        const size_t n = size_t(allow_rows->shape(0));
        for (size_t i = 0; i < n; ++i)
            if (r[i] < 0 || r[i] >= total || (i && r[i] <= r[i - 1]))
                fail("allow_rows must be sorted, unique rows in [0, " + std::to_string(total) + ")");
        req.allow_rows = r;
        req.n_allow_rows = n;
    }
    req.queries = queries.data();

    py::array_t<int64_t> rows({py::ssize_t(req.nq), k});
    py::array_t<float> scores({py::ssize_t(req.nq), k});
    int64_t* rp = rows.mutable_data();
    float* sp = scores.mutable_data();
    {
        py::gil_scoped_release release;
        scan(req, rp, sp);
    }
    return py::make_tuple(rows, scores);
}

py::array dot(const std::string& kind, const py::array& matrix, const py::array& queries,
              std::optional<std::string> level) {
    const Elem e = parse_elem(kind);
    const Kernels& K = kernels(level);
    check(matrix, "matrix", dtype_of(e), 2);
    check(queries, "queries", e == Elem::I8 ? py::dtype("int8") : py::dtype("float32"), 2);
    if (matrix.shape(1) != queries.shape(1)) fail("matrix and queries differ in dimension");
    const size_t n = size_t(matrix.shape(0)), nq = size_t(queries.shape(0)), d = size_t(matrix.shape(1));
    if (e == Elem::I8) {
        py::array_t<int32_t> out({py::ssize_t(nq), py::ssize_t(n)});
        int32_t* o = out.mutable_data();
        py::gil_scoped_release release;
        K.dot_i8(static_cast<const int8_t*>(matrix.data()), n, d, static_cast<const int8_t*>(queries.data()), nq, o);
        return std::move(out);
    }
    py::array_t<float> out({py::ssize_t(nq), py::ssize_t(n)});
    float* o = out.mutable_data();
    py::gil_scoped_release release;
    if (e == Elem::F16)
        K.dot_f16(static_cast<const uint16_t*>(matrix.data()), n, d, static_cast<const float*>(queries.data()), nq, o);
    else
        K.dot_f32(static_cast<const float*>(matrix.data()), n, d, static_cast<const float*>(queries.data()), nq, o);
    return std::move(out);
}

void quantize_into(const py::array& x, py::array out, py::array scales) {
    check(x, "vectors", py::dtype("float32"), 2);
    check(out, "out", py::dtype("int8"), 2);
    check(scales, "scales", py::dtype("float32"), 1);
    if (out.shape(0) != x.shape(0) || out.shape(1) != x.shape(1) || scales.shape(0) != x.shape(0))
        fail("out must be (n, d) and scales (n,) for vectors of shape (n, d)");
    if (!out.writeable() || !scales.writeable()) fail("out and scales must be writeable");
    const auto* xp = static_cast<const float*>(x.data());
    auto* op = static_cast<int8_t*>(out.mutable_data());
    auto* sp = static_cast<float*>(scales.mutable_data());
    const size_t n = size_t(x.shape(0)), d = size_t(x.shape(1));
    py::gil_scoped_release release;
    quantize_i8(xp, n, d, op, sp);
}

py::array_t<int64_t> ids_array(const py::array& ids) {
    if (ids.dtype().kind() != 'i' && ids.dtype().kind() != 'u')
        throw py::type_error("ids must be integers, got dtype " + std::string(py::str(ids.dtype())));
    if (ids.ndim() != 1) fail("ids must be 1-D");
    return py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(ids);
}

}  // namespace

PYBIND11_MODULE(_simd_search, m) {
    m.doc() = "FaceCore exact SIMD scan kernels (private; use facecore.search)";
    try {
        active_kernels();
    } catch (const std::invalid_argument& e) {
        throw std::runtime_error(std::string("FACECORE_SIMD_LEVEL: ") + e.what());
    }
    m.def("simd_level", [] { return std::string(active_kernels().name); });
    m.def("available_levels", &available_levels);
    m.def("hardware_threads", [] { return plan_threads(0, 1e300, size_t(-1)); });
    m.def("search", &search, py::arg("kind"), py::arg("chunks"), py::arg("queries"), py::arg("query_scales"),
          py::arg("k"), py::arg("threads"), py::arg("allow_bits"), py::arg("allow_rows"),
          py::arg("level") = py::none());
    m.def("dot", &dot, py::arg("kind"), py::arg("matrix"), py::arg("queries"), py::arg("level") = py::none());
    m.def("quantize_i8_into", &quantize_into, py::arg("vectors"), py::arg("out"), py::arg("scales"));

    py::class_<IdMap>(m, "IdMap")
        .def(py::init<>())
        .def("add", [](IdMap& self, const py::array& ids) {
            auto a = ids_array(ids);
            int64_t first = int64_t(self.rows());
            const int64_t bad = self.add(a.data(), size_t(a.shape(0)), &first);
            if (bad >= 0) {
                const int64_t id = a.data()[bad];
                if (id < 0) fail("ids must be >= 0, got " + std::to_string(id));
                fail("id " + std::to_string(id) + " is already in the index (or repeated in ids)");
            }
            return first;
        })
        .def("restore", [](IdMap& self, const py::array& ids) {
            auto a = ids_array(ids);
            if (self.rows()) fail("restore needs an empty IdMap");
            const int64_t bad = self.restore(a.data(), size_t(a.shape(0)));
            if (bad >= 0) fail("saved ids are corrupt: id " + std::to_string(a.data()[bad]) + " at row " +
                               std::to_string(bad) + " is invalid or repeated");
        })
        .def("find", [](const IdMap& self, const py::array& ids) {
            auto a = ids_array(ids);
            py::array_t<int64_t> rows(a.shape(0));
            self.find(a.data(), size_t(a.shape(0)), rows.mutable_data());
            return rows;
        })
        .def("erase", [](IdMap& self, const py::array& ids) {
            auto a = ids_array(ids);
            py::array_t<int64_t> rows(a.shape(0));
            const int64_t bad = self.erase(a.data(), size_t(a.shape(0)), rows.mutable_data());
            if (bad >= 0)
                throw py::key_error("id " + std::to_string(a.data()[bad]) + " is not in the index (or repeated in ids)");
            return rows;
        })
        .def("ids_at", [](const IdMap& self, const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& rows) {
            py::array_t<int64_t> out(rows.shape(0));
            int64_t* o = out.mutable_data();
            for (py::ssize_t i = 0; i < rows.shape(0); ++i) {
                const int64_t r = rows.data()[i];
                o[i] = (r >= 0 && size_t(r) < self.rows()) ? self.id_at(r) : -1;
            }
            return out;
        })
        .def_property_readonly("rows", &IdMap::rows)
        .def_property_readonly("live", &IdMap::live)
        .def_property_readonly("memory_bytes", &IdMap::memory_bytes);
}
