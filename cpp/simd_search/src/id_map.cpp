#include "facecore/id_map.h"

#include <algorithm>
#include <unordered_set>

namespace facecore {
namespace {

inline uint64_t mix(uint64_t x) {  // splitmix64 finaliser
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

constexpr double kMaxLoad = 0.8, kRehashLoad = 0.6;

}  // namespace

size_t IdMap::slot_of(int64_t id) const {
    // Lemire's multiply-shift maps the hash onto any table size, so sizes need not be powers of 2.
    return size_t((unsigned __int128)mix(uint64_t(id)) * slots_.size() >> 64);
}

int64_t IdMap::lookup(int64_t id) const {
    if (slots_.empty()) return -1;
    const size_t n = slots_.size();
    for (size_t s = slot_of(id);; s = s + 1 == n ? 0 : s + 1) {
        const uint32_t r = slots_[s];
        if (r == kEmpty) return -1;
        if (r != kTomb && id_at(r) == id) return r;
    }
}

void IdMap::insert_slot(int64_t id, uint32_t row) {
    const size_t n = slots_.size();
    size_t s = slot_of(id);
    while (slots_[s] != kEmpty && slots_[s] != kTomb) s = s + 1 == n ? 0 : s + 1;
    if (slots_[s] == kEmpty) ++used_;
    slots_[s] = row;
}

void IdMap::rehash(size_t live_target) {
    const size_t size = std::max<size_t>(16, size_t(double(live_target) / kRehashLoad) + 1);
    slots_.assign(size, kEmpty);
    used_ = 0;
    for (size_t r = 0; r < rows_; ++r) {
        const int64_t id = id_at(int64_t(r));
        if (id != kErased) insert_slot(id, uint32_t(r));
    }
}

void IdMap::set_id(size_t row, int64_t id) {
    if ((row >> kBlockBits) >= block_.size()) block_.emplace_back(new int64_t[kBlockMask + 1]);
    block_[row >> kBlockBits][row & kBlockMask] = id;
}

int64_t IdMap::add(const int64_t* ids, size_t n, int64_t* first_row) {
    std::unordered_set<int64_t> batch;
    batch.reserve(n);
    for (size_t i = 0; i < n; ++i)
        if (ids[i] < 0 || lookup(ids[i]) >= 0 || !batch.insert(ids[i]).second) return int64_t(i);
    if (rows_ + n >= size_t(kTomb)) return 0;  // row numbers must fit the uint32 slots
    if (double(used_ + n) > kMaxLoad * double(slots_.size())) rehash(live_ + n);
    *first_row = int64_t(rows_);
    for (size_t i = 0; i < n; ++i) {
        set_id(rows_, ids[i]);
        insert_slot(ids[i], uint32_t(rows_));
        ++rows_;
    }
    live_ += n;
    return -1;
}

int64_t IdMap::restore(const int64_t* ids, size_t n) {
    if (rows_ != 0 || n >= size_t(kTomb)) return 0;
    size_t live = 0;
    for (size_t i = 0; i < n; ++i) live += ids[i] != kErased;
    rehash(live);  // empty table of the right size
    for (size_t i = 0; i < n; ++i) {
        if (ids[i] < kErased || (ids[i] != kErased && lookup(ids[i]) >= 0)) {
            block_.clear();
            slots_.clear();
            rows_ = live_ = used_ = 0;
            return int64_t(i);
        }
        set_id(i, ids[i]);
        rows_ = i + 1;
        if (ids[i] != kErased) insert_slot(ids[i], uint32_t(i));
    }
    live_ = live;
    return -1;
}

void IdMap::find(const int64_t* ids, size_t n, int64_t* rows) const {
    for (size_t i = 0; i < n; ++i) rows[i] = lookup(ids[i]);
}

int64_t IdMap::erase(const int64_t* ids, size_t n, int64_t* rows) {
    std::unordered_set<int64_t> batch;
    batch.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        rows[i] = lookup(ids[i]);
        if (rows[i] < 0 || !batch.insert(ids[i]).second) return int64_t(i);
    }
    const size_t size = slots_.size();
    for (size_t i = 0; i < n; ++i) {
        for (size_t s = slot_of(ids[i]);; s = s + 1 == size ? 0 : s + 1)
            if (slots_[s] == uint32_t(rows[i])) {
                slots_[s] = kTomb;
                break;
            }
        set_id(size_t(rows[i]), kErased);
    }
    live_ -= n;
    return -1;
}

size_t IdMap::memory_bytes() const {
    return block_.size() * (kBlockMask + 1) * sizeof(int64_t) + slots_.capacity() * sizeof(uint32_t);
}

}  // namespace facecore
