// Engine pool: the execution contexts of one model, N per device, over one or several devices.
// `acquire` blocks until a context is free and returns an RAII lease that gives it back; a free
// context of the least busy device is taken first (ties in turn), so several GPUs share the load.
//
// A device whose runs fail `max_failures` times in a row is taken out while another device is still
// in: its callers got their errors, and later work goes to the others. With one device left it
// stays in (its errors keep reaching only the callers of the failing runs).
//
// Thread-safe. The pool owns its runners and contexts; leases must not outlive it.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

#include "facecore/engine/runner.h"

namespace facecore::engine {

class Pool {
public:
    // One runner per device (all of the same model); `contexts` contexts each.
    Pool(std::vector<std::shared_ptr<IRunner>> runners, int contexts, int max_failures = 3);
    Pool(const Pool&) = delete;
    Pool& operator=(const Pool&) = delete;

    class Lease {
    public:
        Lease(Lease&& o) noexcept : pool_(o.pool_), slot_(o.slot_) { o.pool_ = nullptr; }
        Lease& operator=(Lease&&) = delete;
        Lease(const Lease&) = delete;
        ~Lease();
        IContext& context() const;
        IRunner& runner() const;
        // Reports how the run on this lease went (feeds the device's failure count).
        void ran(bool ok) const;

    private:
        friend class Pool;
        Lease(Pool* pool, size_t slot) : pool_(pool), slot_(slot) {}
        Pool* pool_;
        size_t slot_;
    };

    Lease acquire();

    const ModelSpec& spec() const { return runners_.front()->spec(); }
    const std::vector<std::shared_ptr<IRunner>>& runners() const { return runners_; }
    size_t size() const { return slots_.size(); }
    size_t busy() const;
    std::vector<bool> devices_up() const;

    // Runs every batch bucket once on every context with zeros (models with fixed shapes only), so
    // that no request pays for a first call (TorchScript's profiling runs, graph capture, cuDNN's
    // algorithm search). Throws RunError naming the model and device if one fails.
    void warm(int rounds = 3);

private:
    struct Slot {
        size_t runner;
        std::unique_ptr<IContext> context;
        bool busy = false;
    };
    void release(size_t slot);
    size_t up_count() const;

    std::vector<std::shared_ptr<IRunner>> runners_;
    std::vector<Slot> slots_;
    std::vector<int> busy_per_runner_;
    std::vector<int> failures_;  // consecutive failed runs per runner
    std::vector<bool> up_;
    int max_failures_;
    size_t next_ = 0;
    mutable std::mutex mu_;
    std::condition_variable freed_;
};

}  // namespace facecore::engine
