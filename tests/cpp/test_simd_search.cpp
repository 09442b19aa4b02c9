// C++ tests of the scan core, run by ctest (`make test` builds them in build/ctest; a cross build
// runs them under qemu for other ISAs). Every level this CPU runs is checked against the serial
// level: int8 identical, floats within a tolerance growing with d; then top-k, ties and IdMap.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "facecore/dispatch.h"
#include "facecore/id_map.h"
#include "facecore/scan.h"

#include "expect.h"

using namespace facecore;

namespace {

uint16_t to_half(float f) {  // round-to-nearest-even binary32 -> binary16, normal range only
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u;
    int32_t exp = int32_t((x >> 23) & 0xff) - 127 + 15;
    uint32_t mant = x & 0x7fffffu;
    if (exp <= 0) return uint16_t(sign);
    uint32_t h = sign | (uint32_t(exp) << 10) | (mant >> 13);
    const uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1))) ++h;
    return uint16_t(h);
}

void test_levels_against_serial(std::mt19937& rng) {
    const Kernels& ref = kernels_for("serial");
    std::uniform_int_distribution<int> byte(-127, 127);
    std::normal_distribution<float> normal;
    for (const std::string& level : available_levels()) {
        const Kernels& K = kernels_for(level);
        for (size_t d : {1, 3, 7, 15, 16, 17, 31, 33, 64, 127, 128, 129, 512, 2049}) {
            const size_t n = 37;
            for (size_t nq : {1, 6, 19}) {
                std::vector<int8_t> x(n * d), q(nq * d);
                for (auto& v : x) v = int8_t(byte(rng));
                for (auto& v : q) v = int8_t(byte(rng));
                std::fill(q.begin(), q.begin() + d, int8_t(127));
                std::fill(x.begin(), x.begin() + d, int8_t(-127));
                std::vector<int32_t> a(n * nq), b(n * nq);
                K.dot_i8(x.data(), n, d, q.data(), nq, a.data());
                ref.dot_i8(x.data(), n, d, q.data(), nq, b.data());
                EXPECT(a == b, "int8 level %s d=%zu nq=%zu", level.c_str(), d, nq);

                std::vector<float> xf(n * d), qf(nq * d), fa(n * nq), fb(n * nq);
                std::vector<uint16_t> xh(n * d);
                for (size_t i = 0; i < xf.size(); ++i) {
                    xf[i] = normal(rng);
                    xh[i] = to_half(xf[i]);
                }
                for (auto& v : qf) v = normal(rng);
                const float tol = 64 * std::numeric_limits<float>::epsilon() * float(d) + 1e-5f;
                K.dot_f32(xf.data(), n, d, qf.data(), nq, fa.data());
                ref.dot_f32(xf.data(), n, d, qf.data(), nq, fb.data());
                for (size_t i = 0; i < fa.size(); ++i)
                    EXPECT(std::fabs(fa[i] - fb[i]) <= tol, "f32 level %s d=%zu: %g vs %g", level.c_str(), d, fa[i], fb[i]);
                K.dot_f16(xh.data(), n, d, qf.data(), nq, fa.data());
                ref.dot_f16(xh.data(), n, d, qf.data(), nq, fb.data());
                for (size_t i = 0; i < fa.size(); ++i)
                    EXPECT(std::fabs(fa[i] - fb[i]) <= tol, "f16 level %s d=%zu: %g vs %g", level.c_str(), d, fa[i], fb[i]);
            }
        }
    }
}

void test_scan_topk_and_ties(std::mt19937& rng) {
    const size_t n = 20000, d = 24, k = 5;
    std::vector<float> x(n * d);
    std::normal_distribution<float> normal;
    for (auto& v : x) v = normal(rng);
    std::vector<float> q(x.begin() + 77 * d, x.begin() + 78 * d);
    for (const std::string& level : available_levels()) {
        for (unsigned threads : {1u, 2u, 3u}) {
            ScanRequest r;
            r.elem = Elem::F32;
            r.d = d;
            r.chunks = {{x.data(), nullptr, 7000}, {x.data() + 7000 * d, nullptr, int64_t(n - 7000)}};
            r.queries = q.data();
            r.nq = 1;
            r.k = k;
            r.threads = threads;
            r.kernels = &kernels_for(level);
            std::vector<int64_t> rows(k);
            std::vector<float> scores(k);
            scan(r, rows.data(), scores.data());
            std::vector<std::pair<float, int64_t>> all;
            for (size_t i = 0; i < n; ++i) {
                float s = 0;
                for (size_t c = 0; c < d; ++c) s += x[i * d + c] * q[c];
                all.push_back({-s, int64_t(i)});
            }
            std::partial_sort(all.begin(), all.begin() + k, all.end());
            for (size_t i = 0; i < k; ++i)
                EXPECT(rows[i] == all[i].second, "level %s threads %u rank %zu: row %lld vs %lld", level.c_str(),
                      threads, i, (long long)rows[i], (long long)all[i].second);
            EXPECT(rows[0] == 77, "self match first");
        }
    }
    // All scores equal: the lowest rows win, at any thread count.
    std::vector<int8_t> same(n * 4, 1);
    std::vector<int8_t> one(4, 1);
    for (unsigned threads : {1u, 2u}) {
        ScanRequest r;
        r.elem = Elem::I8;
        r.d = 4;
        r.chunks = {{same.data(), nullptr, int64_t(n)}};
        r.queries = one.data();
        r.nq = 1;
        r.k = 3;
        r.threads = threads;
        r.kernels = &active_kernels();
        std::vector<int64_t> rows(3);
        std::vector<float> scores(3);
        scan(r, rows.data(), scores.data());
        EXPECT(rows[0] == 0 && rows[1] == 1 && rows[2] == 2, "ties by row with %u threads", threads);
    }
}

void test_id_map() {
    IdMap m;
    std::vector<int64_t> ids;
    for (int64_t i = 0; i < 100000; ++i) ids.push_back(i * 7919 + 13);
    int64_t first = -1;
    EXPECT(m.add(ids.data(), ids.size(), &first) == -1 && first == 0, "bulk add");
    std::vector<int64_t> rows(ids.size());
    m.find(ids.data(), ids.size(), rows.data());
    bool ok = true;
    for (size_t i = 0; i < ids.size(); ++i) ok &= rows[i] == int64_t(i);
    EXPECT(ok, "find after add");
    const int64_t dup[] = {5, 13};
    EXPECT(m.add(dup, 2, &first) == 1 && m.live() == ids.size(), "duplicate refused, nothing added");
    const int64_t gone[] = {13, 7919 + 13};
    int64_t out[2];
    EXPECT(m.erase(gone, 2, out) == -1 && out[0] == 0 && out[1] == 1, "erase");
    EXPECT(m.erase(gone, 1, out) == 0, "erase twice refused");
    m.find(gone, 2, out);
    EXPECT(out[0] == -1 && out[1] == -1, "erased ids are gone");
    EXPECT(m.add(gone, 1, &first) == -1 && first == int64_t(ids.size()), "re-add gets a new row");
    EXPECT(m.id_at(0) == IdMap::kErased && m.id_at(first) == 13, "row -> id");
}

}  // namespace

int main() {
    std::mt19937 rng(1234);
    std::printf("levels:");
    for (const auto& l : available_levels()) std::printf(" %s", l.c_str());
    std::printf(" (active %s)\n", active_kernels().name);
    test_levels_against_serial(rng);
    test_scan_topk_and_ties(rng);
    test_id_map();
    std::printf("%s: %d failures\n", failures ? "FAILED" : "OK", failures);
    return failures ? 1 : 0;
}
