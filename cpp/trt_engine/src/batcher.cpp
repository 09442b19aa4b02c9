#include "facecore/engine/batcher.h"

#include <cstring>
#include <exception>

namespace facecore::engine {

using Clock = std::chrono::steady_clock;

struct Batcher::Request {
    const std::vector<View>* inputs;
    int64_t n;
    bool may_wait;
    Clock::time_point queued_at;
    std::vector<Tensor> outputs;
    std::exception_ptr error;
    bool done = false;
    std::mutex mu;
    std::condition_variable cv;

    // Requests merge when every input has the same per-item shape.
    bool joins(const Request& other) const {
        for (size_t i = 0; i < inputs->size(); ++i) {
            const Shape& a = (*inputs)[i].shape;
            const Shape& b = (*other.inputs)[i].shape;
            if (!std::equal(a.begin() + 1, a.end(), b.begin() + 1, b.end())) return false;
        }
        return true;
    }

    void finish(std::vector<Tensor> out, std::exception_ptr err) {
        // Notified under the lock: the waiter destroys this request as soon as it sees `done`.
        std::lock_guard<std::mutex> lk(mu);
        outputs = std::move(out);
        error = std::move(err);
        done = true;
        cv.notify_one();
    }
};

Batcher::Batcher(std::shared_ptr<Pool> pool, int max_batch, std::chrono::microseconds max_wait)
    : pool_(std::move(pool)), max_batch_(max_batch), max_wait_(max_wait) {
    FC_REQUIRE(pool_ != nullptr, "a batcher needs a pool");
    FC_REQUIRE(max_batch >= 1 && max_batch <= pool_->spec().max_batch,
               "max_batch must be in 1.." + std::to_string(pool_->spec().max_batch) + " (the model's), got " +
                   std::to_string(max_batch));
    FC_REQUIRE(max_wait.count() >= 0, "max_wait must be >= 0");
    for (size_t i = 0; i < pool_->size(); ++i) workers_.emplace_back([this] { work(); });
}

Batcher::~Batcher() {
    std::deque<Request*> left;
    {
        std::lock_guard<std::mutex> lk(mu_);
        stop_ = true;
        left.swap(queue_);
    }
    queued_.notify_all();
    for (Request* r : left)
        r->finish({}, std::make_exception_ptr(RunError("model '" + pool_->spec().name + "': engine closed")));
    for (auto& t : workers_) t.join();
}

BatcherStats Batcher::stats() const {
    std::lock_guard<std::mutex> lk(mu_);
    return stats_;
}

std::vector<Tensor> Batcher::run(const std::vector<View>& inputs, bool may_wait) {
    const int64_t n = check_inputs(pool_->spec(), inputs);
    if (n <= max_batch_) return run_one(inputs, n, may_wait);
    // Bigger than one run: slices of max_batch, outputs concatenated.
    std::vector<Tensor> out;
    for (int64_t start = 0; start < n; start += max_batch_) {
        const int64_t m = std::min<int64_t>(max_batch_, n - start);
        std::vector<View> slice;
        for (const View& v : inputs) {
            Shape s = v.shape;
            s[0] = m;
            slice.push_back(View{v.data + start * (numel(v.shape) / n), s});
        }
        std::vector<Tensor> part = run_one(slice, m, may_wait);
        if (out.empty()) {
            out = std::move(part);
            for (Tensor& t : out) t.data.reserve(size_t(numel(t.shape) / m * n));
            continue;
        }
        for (size_t j = 0; j < out.size(); ++j) {
            out[j].data.insert(out[j].data.end(), part[j].data.begin(), part[j].data.end());
            out[j].shape[0] += part[j].shape[0];
        }
    }
    return out;
}

std::vector<Tensor> Batcher::run_one(const std::vector<View>& inputs, int64_t n, bool may_wait) {
    Request r;
    r.inputs = &inputs;
    r.n = n;
    r.may_wait = may_wait;
    r.queued_at = Clock::now();
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (stop_) throw RunError("model '" + pool_->spec().name + "': engine closed");
        queue_.push_back(&r);
        ++stats_.requests;
        stats_.items += uint64_t(n);
    }
    queued_.notify_all();
    std::unique_lock<std::mutex> lk(r.mu);
    r.cv.wait(lk, [&] { return r.done; });
    if (r.error) std::rethrow_exception(r.error);
    return std::move(r.outputs);
}

void Batcher::work() {
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
        queued_.wait(lk, [&] { return stop_ || (!gathering_ && !queue_.empty()); });
        if (stop_) return;
        gathering_ = true;  // one gatherer at a time; the other workers are free to run batches
        const Request* first = queue_.front();
        auto items_like_first = [&] {
            int64_t k = 0;
            for (const Request* r : queue_)
                if (r->joins(*first)) k += r->n;
            return k;
        };
        if (first->may_wait && max_wait_.count() > 0) {
            const auto deadline = first->queued_at + max_wait_;
            while (!stop_ && items_like_first() < max_batch_ && Clock::now() < deadline)
                queued_.wait_until(lk, deadline);
        }
        std::vector<Request*> batch;
        int64_t total = 0;
        for (auto it = queue_.begin(); it != queue_.end();) {
            Request* r = *it;
            if (r->joins(*first) && (batch.empty() || total + r->n <= max_batch_)) {
                batch.push_back(r);
                total += r->n;
                it = queue_.erase(it);
            } else {
                ++it;
            }
        }
        gathering_ = false;
        lk.unlock();
        queued_.notify_all();
        execute(batch);
        lk.lock();
    }
}

void Batcher::execute(std::vector<Request*>& batch) {
    const ModelSpec& spec = pool_->spec();
    int64_t total = 0;
    for (const Request* r : batch) total += r->n;

    // One request runs on its caller's memory; several are copied into one buffer per input.
    std::vector<std::vector<float>> merged;
    std::vector<View> views;
    if (batch.size() == 1) {
        views = *batch[0]->inputs;
    } else {
        for (size_t i = 0; i < spec.inputs.size(); ++i) {
            Shape shape = (*batch[0]->inputs)[i].shape;
            shape[0] = total;
            merged.emplace_back(size_t(numel(shape)));
            float* dst = merged.back().data();
            for (const Request* r : batch) {
                const View& v = (*r->inputs)[i];
                std::memcpy(dst, v.data, size_t(numel(v.shape)) * sizeof(float));
                dst += numel(v.shape);
            }
            views.push_back(View{merged.back().data(), shape});
        }
    }

    std::vector<Tensor> outs;
    std::string error;  // each caller gets its own exception object, not one shared across threads
    bool caller_error = false;
    {
        Pool::Lease lease = pool_->acquire();
        try {
            outs = lease.context().run(views);
            if (outs.size() != spec.outputs.size())
                throw RunError("model '" + spec.name + "' returned " + std::to_string(outs.size()) +
                               " outputs, the manifest lists " + std::to_string(spec.outputs.size()));
            for (const Tensor& t : outs)
                if (t.shape.empty() || t.shape[0] != total)
                    throw RunError("model '" + spec.name + "' does not return batch-major outputs: got " +
                                   shape_str(t.shape) + " for a batch of " + std::to_string(total));
            lease.ran(true);
        } catch (const Error& e) {  // a caller's mistake the runner caught: the device is fine
            lease.ran(true);
            error = e.what();
            caller_error = true;
        } catch (const std::exception& e) {
            lease.ran(false);
            error = e.what();
        } catch (...) {
            lease.ran(false);
            error = "model '" + spec.name + "': unknown failure";
        }
    }
    const bool failed = !error.empty();
    {
        std::lock_guard<std::mutex> lk(mu_);
        ++stats_.runs;
        stats_.merged += batch.size() > 1;
        stats_.failed += failed;
    }
    if (failed) {
        for (Request* r : batch)
            r->finish({}, caller_error ? std::make_exception_ptr(Error(error)) : std::make_exception_ptr(RunError(error)));
        return;
    }
    if (batch.size() == 1) {
        batch[0]->finish(std::move(outs), nullptr);
        return;
    }
    int64_t offset = 0;
    for (Request* r : batch) {
        std::vector<Tensor> mine(outs.size());
        for (size_t j = 0; j < outs.size(); ++j) {
            const int64_t per = numel(outs[j].shape) / total;
            mine[j].shape = outs[j].shape;
            mine[j].shape[0] = r->n;
            mine[j].data.assign(outs[j].data.begin() + offset * per, outs[j].data.begin() + (offset + r->n) * per);
        }
        offset += r->n;
        r->finish(std::move(mine), nullptr);
    }
}

}  // namespace facecore::engine
