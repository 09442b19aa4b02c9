#include "facecore/engine/pool.h"

#include <cassert>
#include <limits>

namespace facecore::engine {

Pool::Pool(std::vector<std::shared_ptr<IRunner>> runners, int contexts, int max_failures)
    : runners_(std::move(runners)), max_failures_(max_failures) {
    FC_REQUIRE(!runners_.empty(), "a pool needs at least one runner");
    FC_REQUIRE(contexts >= 1, "contexts must be >= 1, got " + std::to_string(contexts));
    FC_REQUIRE(max_failures >= 1, "max_failures must be >= 1");
    busy_per_runner_.assign(runners_.size(), 0);
    failures_.assign(runners_.size(), 0);
    up_.assign(runners_.size(), true);
    // Interleaved (device 0, device 1, device 0, ...) so that ties spread over devices.
    for (int c = 0; c < contexts; ++c)
        for (size_t r = 0; r < runners_.size(); ++r) slots_.push_back(Slot{r, runners_[r]->create_context()});
}

Pool::Lease::~Lease() {
    if (pool_) pool_->release(slot_);
}

IContext& Pool::Lease::context() const { return *pool_->slots_[slot_].context; }

IRunner& Pool::Lease::runner() const { return *pool_->runners_[pool_->slots_[slot_].runner]; }

void Pool::Lease::ran(bool ok) const {
    std::lock_guard<std::mutex> lk(pool_->mu_);
    const size_t r = pool_->slots_[slot_].runner;
    if (ok) {
        pool_->failures_[r] = 0;
    } else if (++pool_->failures_[r] >= pool_->max_failures_ && pool_->up_[r] && pool_->up_count() > 1) {
        pool_->up_[r] = false;  // its queued waiters move to the other devices
        pool_->freed_.notify_all();
    }
}

size_t Pool::up_count() const {
    size_t n = 0;
    for (bool u : up_) n += u;
    return n;
}

Pool::Lease Pool::acquire() {
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
        size_t best = slots_.size();
        int best_busy = std::numeric_limits<int>::max();
        for (size_t k = 0; k < slots_.size(); ++k) {  // from a rotating start: ties alternate devices
            const size_t s = (next_ + k) % slots_.size();
            const Slot& slot = slots_[s];
            if (slot.busy || !up_[slot.runner]) continue;
            if (busy_per_runner_[slot.runner] < best_busy) {
                best = s;
                best_busy = busy_per_runner_[slot.runner];
            }
        }
        if (best < slots_.size()) {
            next_ = best + 1;
            slots_[best].busy = true;
            ++busy_per_runner_[slots_[best].runner];
            return Lease(this, best);
        }
        freed_.wait(lk);
    }
}

void Pool::release(size_t slot) {
    {
        std::lock_guard<std::mutex> lk(mu_);
        assert(slots_[slot].busy);
        slots_[slot].busy = false;
        --busy_per_runner_[slots_[slot].runner];
    }
    freed_.notify_one();
}

size_t Pool::busy() const {
    std::lock_guard<std::mutex> lk(mu_);
    size_t n = 0;
    for (const Slot& s : slots_) n += s.busy;
    return n;
}

std::vector<bool> Pool::devices_up() const {
    std::lock_guard<std::mutex> lk(mu_);
    return up_;
}

void Pool::warm(int rounds) {
    const ModelSpec& spec = this->spec();
    if (!fixed_shapes(spec)) return;  // P-Net: any image size; its shapes are met as they come
    const std::vector<int> buckets = batch_buckets(spec.max_batch);
    for (Slot& slot : slots_) {
        IRunner& runner = *runners_[slot.runner];
        for (int b : buckets) {
            std::vector<std::vector<float>> data;
            std::vector<View> views;
            for (const auto& in : spec.inputs) {
                Shape shape = in.shape;
                shape[0] = b;
                data.emplace_back(size_t(numel(shape)), 0.0f);
                views.push_back(View{data.back().data(), shape});
            }
            for (int r = 0; r < rounds; ++r) {
                try {
                    slot.context->run(views);
                } catch (const std::exception& e) {
                    throw RunError("warming model '" + spec.name + "' on " + runner.device() + " at batch " +
                                   std::to_string(b) + ": " + e.what());
                }
            }
        }
    }
}

}  // namespace facecore::engine
