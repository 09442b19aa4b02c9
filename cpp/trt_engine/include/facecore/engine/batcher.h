// Dynamic batcher: concurrent callers' requests for one model merged into one run, up to
// `max_batch` items, waiting at most `max_wait` for company. Requests merge only when every input
// has the same per-item shape (P-Net's pyramid levels differ, chips do not).
//
// Threading: `run` blocks the calling thread (the binding releases the GIL first) until its
// outputs are ready. One worker thread per pool context gathers and runs batches; one worker at a
// time gathers, so a batch forms while the others run. A request that does not ask to wait
// (`may_wait` false: the caller knows no one else is in flight) is dispatched at once.
// Errors of a run reach only the callers whose items were in it. The destructor fails what is still
// queued and joins the workers; callers must have returned before it runs.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "facecore/engine/pool.h"

namespace facecore::engine {

struct BatcherStats {
    uint64_t requests = 0;  // calls of run()
    uint64_t items = 0;     // items (dimension 0) over all requests
    uint64_t runs = 0;      // runs of the model
    uint64_t merged = 0;    // runs that served more than one request
    uint64_t failed = 0;    // runs that threw
};

class Batcher {
public:
    Batcher(std::shared_ptr<Pool> pool, int max_batch, std::chrono::microseconds max_wait);
    ~Batcher();
    Batcher(const Batcher&) = delete;
    Batcher& operator=(const Batcher&) = delete;

    // The outputs for `inputs` (views valid until this returns). Requests bigger than max_batch run
    // in max_batch slices. Throws Error for bad inputs (before queueing), RunError if its run failed.
    std::vector<Tensor> run(const std::vector<View>& inputs, bool may_wait = true);

    BatcherStats stats() const;
    const Pool& pool() const { return *pool_; }
    int max_batch() const { return max_batch_; }

private:
    struct Request;
    void work();
    void execute(std::vector<Request*>& batch);
    std::vector<Tensor> run_one(const std::vector<View>& inputs, int64_t n, bool may_wait);

    std::shared_ptr<Pool> pool_;
    const int max_batch_;
    const std::chrono::microseconds max_wait_;
    mutable std::mutex mu_;
    std::condition_variable queued_;  // a request arrived, or the gatherer left, or stop
    std::deque<Request*> queue_;
    bool gathering_ = false;
    bool stop_ = false;
    BatcherStats stats_;
    std::vector<std::thread> workers_;
};

}  // namespace facecore::engine
