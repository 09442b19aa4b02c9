// Maps caller ids (int64 >= 0) to dense row numbers (insertion order) and back.
//
// Memory: 8 bytes per row for the row -> id table (kept in fixed blocks, so growth never copies
// it) plus one uint32 slot per table entry of an open-addressing hash (linear probing, load kept
// between 0.6 and 0.8): about 13-15 bytes per face in all. Not thread-safe by itself: the Python
// binding calls it with the GIL held, which serialises every call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace facecore {

class IdMap {
public:
    static constexpr int64_t kErased = -1;

    // Validates the whole batch first (ids >= 0, unique, not present); on success appends rows
    // size()..size()+n-1 in order. Returns the index of the first offending id, or -1 when done.
    int64_t add(const int64_t* ids, size_t n, int64_t* first_row);
    // Rebuilds an empty map from a saved row -> id table (kErased marks erased rows). Returns the
    // index of the first invalid or repeated id, or -1 when done.
    int64_t restore(const int64_t* ids, size_t n);
    // rows[i] = row of ids[i], or -1 when absent.
    void find(const int64_t* ids, size_t n, int64_t* rows) const;
    // Validates the whole batch first (every id present, no repeats); on success erases and writes
    // their rows. Returns the index of the first offending id, or -1 when done.
    int64_t erase(const int64_t* ids, size_t n, int64_t* rows);
    // The id at a row, kErased once erased.
    int64_t id_at(int64_t row) const { return block_[size_t(row) >> kBlockBits][size_t(row) & kBlockMask]; }

    size_t rows() const { return rows_; }
    size_t live() const { return live_; }
    size_t memory_bytes() const;

private:
    static constexpr size_t kBlockBits = 14, kBlockMask = (size_t(1) << kBlockBits) - 1;
    static constexpr uint32_t kEmpty = 0xffffffffu, kTomb = 0xfffffffeu;

    size_t slot_of(int64_t id) const;  // first probe position
    int64_t lookup(int64_t id) const;  // row or -1
    void insert_slot(int64_t id, uint32_t row);
    void rehash(size_t live_target);
    void set_id(size_t row, int64_t id);

    std::vector<std::unique_ptr<int64_t[]>> block_;
    std::vector<uint32_t> slots_;
    size_t rows_ = 0, live_ = 0, used_ = 0;  // used_: live + tombstones occupying slots
};

}  // namespace facecore
