// Exact top-k scan: thread split, row blocking, per-thread heaps, merge. See scan.h for the contract.
#include "facecore/scan.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <mutex>
#include <thread>

#if defined(__linux__)
#include <sched.h>
#endif
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace facecore {
namespace {

struct Hit {
    float score;
    int64_t row;
};

// "a ranks before b". Used as the heap comparator, so a heap's front is its worst hit.
inline bool better(const Hit& a, const Hit& b) {
    return a.score > b.score || (a.score == b.score && a.row < b.row);
}

size_t elem_size(Elem e) { return e == Elem::I8 ? 1 : e == Elem::F16 ? 2 : 4; }

// Queries scored per pass over a row block. The int8 batch kernel transposes each 16 rows once
// per group, so a larger group spreads that cost further; the group's scores (group x block
// floats) stay within L2.
constexpr size_t kQueryGroup = 64;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

bool any_bit(const uint8_t* bits, int64_t from, int64_t to) {
    int64_t i = from;
    for (; i < to && (i & 7); ++i)
        if (bits[i >> 3] >> (i & 7) & 1) return true;
    for (; i + 8 <= to; i += 8)
        if (bits[i >> 3]) return true;
    for (; i < to; ++i)
        if (bits[i >> 3] >> (i & 7) & 1) return true;
    return false;
}

class Worker {
public:
    Worker(const ScanRequest& req, size_t block_rows)
        : req_(req), esize_(elem_size(req.elem)), block_(block_rows), hits_(req.nq * req.k),
          sizes_(req.nq, 0), thresholds_(req.nq, kNegInf) {
        const size_t g = std::min(req.nq, kQueryGroup);
        if (req.elem == Elem::I8) ibuf_.resize(g * block_);
        fbuf_.resize(g * block_);
    }

    // Scores global rows [row0, row0 + n) stored contiguously at data (scales: int8 only).
    void run_range(const uint8_t* data, const float* scales, int64_t row0, size_t n) {
        for (size_t b = 0; b < n; b += block_) {
            const size_t nb = std::min(block_, n - b);
            const int64_t first = row0 + int64_t(b);
            if (req_.allow_bits && !any_bit(req_.allow_bits, first, first + int64_t(nb))) continue;
            block(data + b * req_.d * esize_, scales ? scales + b : nullptr, nb, first, nullptr);
        }
    }

    // Scores the listed global rows (sorted), gathering them block by block.
    void run_list(const int64_t* rows, size_t n, const std::vector<int64_t>& chunk_start) {
        const size_t row_bytes = req_.d * esize_;
        gather_.resize(block_ * row_bytes);
        gather_scales_.resize(block_);
        bool any_scales = false;
        for (size_t b = 0; b < n; b += block_) {
            const size_t nb = std::min(block_, n - b);
            for (size_t i = 0; i < nb; ++i) {
                const int64_t r = rows[b + i];
                const size_t c = size_t(std::upper_bound(chunk_start.begin(), chunk_start.end(), r) -
                                        chunk_start.begin()) - 1;
                const ChunkView& ch = req_.chunks[c];
                const int64_t local = r - chunk_start[c];
                std::memcpy(gather_.data() + i * row_bytes,
                            static_cast<const uint8_t*>(ch.data) + size_t(local) * row_bytes, row_bytes);
                gather_scales_[i] = ch.scales ? ch.scales[local] : 1.f;
                any_scales |= ch.scales != nullptr;
            }
            block(gather_.data(), any_scales ? gather_scales_.data() : nullptr, nb, 0, rows + b);
        }
    }

    Hit* heap(size_t j) { return hits_.data() + j * req_.k; }
    size_t size(size_t j) const { return sizes_[j]; }

private:
    void block(const uint8_t* data, const float* scales, size_t nb, int64_t first, const int64_t* rows) {
        const size_t d = req_.d;
        for (size_t j0 = 0; j0 < req_.nq; j0 += kQueryGroup) {
            const size_t ng = std::min(kQueryGroup, req_.nq - j0);
            switch (req_.elem) {
                case Elem::I8:
                    req_.kernels->dot_i8(reinterpret_cast<const int8_t*>(data), nb, d,
                                         static_cast<const int8_t*>(req_.queries) + j0 * d, ng, ibuf_.data());
                    break;
                case Elem::F16:
                    req_.kernels->dot_f16(reinterpret_cast<const uint16_t*>(data), nb, d,
                                          static_cast<const float*>(req_.queries) + j0 * d, ng, fbuf_.data());
                    break;
                case Elem::F32:
                    req_.kernels->dot_f32(reinterpret_cast<const float*>(data), nb, d,
                                          static_cast<const float*>(req_.queries) + j0 * d, ng, fbuf_.data());
                    break;
            }
            if (req_.elem == Elem::I8) {  // exact int dots -> comparable scores, one vector loop
                for (size_t jj = 0; jj < ng; ++jj) {
                    const int32_t* in = ibuf_.data() + jj * nb;
                    float* out = fbuf_.data() + jj * nb;
                    if (scales)
                        for (size_t i = 0; i < nb; ++i) out[i] = float(in[i]) * scales[i];
                    else
                        for (size_t i = 0; i < nb; ++i) out[i] = float(in[i]);
                }
            }
            for (size_t jj = 0; jj < ng; ++jj) select(j0 + jj, fbuf_.data() + jj * nb, nb, first, rows);
        }
    }

    // Rows arrive in increasing order within a worker, so a later row with an equal score ranks
    // after everything already held: a strict '>' against the worst held hit is the whole test.
    void select(size_t j, const float* score, size_t nb, int64_t first, const int64_t* rows) {
        Hit* h = heap(j);
        const size_t k = req_.k;
        const uint8_t* bits = req_.allow_bits;
        size_t sz = sizes_[j];
        float thr = thresholds_[j];
        for (size_t i = 0; i < nb; ++i) {
            if (sz == k) {
                i = next_above(score, i, nb, thr);
                if (i == nb) break;
            }
            const int64_t row = rows ? rows[i] : first + int64_t(i);
            if (bits && !(bits[row >> 3] >> (row & 7) & 1)) continue;
            const float s = std::isnan(score[i]) ? kNegInf : score[i];
            if (sz < k) {
                h[sz++] = Hit{s, row};
                std::push_heap(h, h + sz, better);
            } else {
                std::pop_heap(h, h + k, better);
                h[k - 1] = Hit{s, row};
                std::push_heap(h, h + k, better);
            }
            if (sz == k) thr = h[0].score;
        }
        sizes_[j] = sz;
        thresholds_[j] = thr;
    }

    // First i' >= i with score[i'] > thr, or nb: once the heaps are full almost every score fails,
    // so test 16 at a time (SSE2 is baseline on x86-64).
    static size_t next_above(const float* score, size_t i, size_t nb, float thr) {
#if defined(__SSE2__)
        const __m128 t = _mm_set1_ps(thr);
        for (; i + 16 <= nb; i += 16) {
            const __m128 m = _mm_or_ps(
                _mm_or_ps(_mm_cmpgt_ps(_mm_loadu_ps(score + i), t), _mm_cmpgt_ps(_mm_loadu_ps(score + i + 4), t)),
                _mm_or_ps(_mm_cmpgt_ps(_mm_loadu_ps(score + i + 8), t), _mm_cmpgt_ps(_mm_loadu_ps(score + i + 12), t)));
            if (_mm_movemask_ps(m)) break;
        }
#endif
        for (; i < nb; ++i)
            if (score[i] > thr) return i;
        return nb;
    }

    const ScanRequest& req_;
    size_t esize_;
    size_t block_;
    std::vector<Hit> hits_;
    std::vector<size_t> sizes_;
    std::vector<float> thresholds_;
    std::vector<int32_t> ibuf_;
    std::vector<float> fbuf_;
    std::vector<uint8_t> gather_;
    std::vector<float> gather_scales_;
};

unsigned hardware_threads() {
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        const int n = CPU_COUNT(&set);
        if (n > 0) return unsigned(n);
    }
#endif
    const unsigned n = std::thread::hardware_concurrency();
    return n ? n : 1;
}

}  // namespace

unsigned plan_threads(unsigned requested, double work, size_t rows) {
    constexpr double kMinWorkPerThread = 4e6;  // ~0.3 ms of int8 work: below it a thread costs more
    unsigned t = requested ? requested : hardware_threads();
    t = std::min<double>(t, std::max(1.0, std::floor(work / kMinWorkPerThread)));
    t = std::min<size_t>(t, std::max<size_t>(rows, 1));
    return std::max(t, 1u);
}

void scan(const ScanRequest& request, int64_t* out_rows, float* out_scores) {
    ScanRequest req = request;  // heaps hold at most as many hits as there are rows to score
    const size_t esize = elem_size(req.elem);
    std::vector<int64_t> chunk_start;
    int64_t total = 0;
    for (const ChunkView& c : req.chunks) {
        chunk_start.push_back(total);
        total += c.rows;
    }
    const bool listed = req.allow_rows != nullptr;
    const size_t n_items = listed ? req.n_allow_rows : size_t(total);
    const size_t block_rows = std::clamp<size_t>((256u << 10) / std::max<size_t>(req.d * esize, 1), 16, 2048);
    req.k = std::min(req.k, n_items);
    const unsigned nt = plan_threads(req.threads, double(n_items) * double(req.d) * double(req.nq), n_items);

    std::vector<Worker> workers;
    workers.reserve(nt);
    for (unsigned t = 0; t < nt; ++t) workers.emplace_back(req, block_rows);

    auto work = [&](unsigned t) {
        const size_t lo = n_items * t / nt, hi = n_items * (t + 1) / nt;
        Worker& w = workers[t];
        if (listed) {
            w.run_list(req.allow_rows + lo, hi - lo, chunk_start);
            return;
        }
        for (size_t c = 0; c < req.chunks.size(); ++c) {
            const int64_t c0 = chunk_start[c], c1 = c0 + req.chunks[c].rows;
            const int64_t a = std::max<int64_t>(c0, int64_t(lo)), b = std::min<int64_t>(c1, int64_t(hi));
            if (a >= b) continue;
            const ChunkView& ch = req.chunks[c];
            w.run_range(static_cast<const uint8_t*>(ch.data) + size_t(a - c0) * req.d * esize,
                        ch.scales ? ch.scales + (a - c0) : nullptr, a, size_t(b - a));
        }
    };

    std::exception_ptr error;
    std::mutex error_mutex;
    auto guarded = [&](unsigned t) {
        try {
            work(t);
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
        }
    };
    std::vector<std::thread> pool;
    pool.reserve(nt - 1);
    for (unsigned t = 1; t < nt; ++t) pool.emplace_back(guarded, t);
    guarded(0);
    for (auto& th : pool) th.join();
    if (error) std::rethrow_exception(error);

    std::vector<Hit> merged;
    for (size_t j = 0; j < req.nq; ++j) {
        merged.clear();
        for (Worker& w : workers) merged.insert(merged.end(), w.heap(j), w.heap(j) + w.size(j));
        const size_t m = std::min(req.k, merged.size());  // req.k <= request.k
        std::partial_sort(merged.begin(), merged.begin() + m, merged.end(), better);
        const float qs = req.query_scales ? req.query_scales[j] : 1.f;
        const size_t k = request.k;
        for (size_t i = 0; i < k; ++i) {
            const bool hit = i < m && merged[i].score != kNegInf;
            out_rows[j * k + i] = i < m ? merged[i].row : -1;
            out_scores[j * k + i] = hit ? merged[i].score * qs : kNegInf;
        }
    }
}

}  // namespace facecore
