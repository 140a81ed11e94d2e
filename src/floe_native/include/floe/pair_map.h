// A fixed, open-addressing hash map from a pair of non-negative int32 ids to a value. BPE looks up every
// adjacent symbol pair, so this lookup is the tokenizer's hot path; std::unordered_map costs ~3x more here.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace floe {

template <typename Value>
class PairMap {
public:
    // Inserts unless the pair is already present (the first value wins). Ids must be >= 0.
    void insert(int32_t a, int32_t b, const Value& v) {
        if ((size_ + 1) * 2 > slots_.size()) grow();
        if (place(slots_, key(a, b), v)) ++size_;
    }

    // nullptr if absent; any id may be passed (a negative one is simply never found).
    const Value* find(int32_t a, int32_t b) const {
        if (slots_.empty() || a < 0 || b < 0) return nullptr;
        const uint64_t k = key(a, b);
        for (size_t i = slot_of(k, slots_.size());; i = (i + 1) & (slots_.size() - 1)) {
            if (slots_[i].key == k) return &slots_[i].value;
            if (slots_[i].key == kEmpty) return nullptr;
        }
    }

    size_t size() const { return size_; }

private:
    struct Slot {
        uint64_t key = kEmpty;
        Value value{};
    };
    static constexpr uint64_t kEmpty = ~uint64_t(0);  // not a valid key: ids are >= 0

    static uint64_t key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
    static size_t slot_of(uint64_t k, size_t n) {  // Fibonacci hashing; n is a power of two
        return static_cast<size_t>((k * 0x9E3779B97F4A7C15ull) >> 32) & (n - 1);
    }

    static bool place(std::vector<Slot>& slots, uint64_t k, const Value& v) {
        for (size_t i = slot_of(k, slots.size());; i = (i + 1) & (slots.size() - 1)) {
            if (slots[i].key == k) return false;
            if (slots[i].key == kEmpty) {
                slots[i] = {k, v};
                return true;
            }
        }
    }

    void grow() {
        std::vector<Slot> bigger(slots_.empty() ? 64 : slots_.size() * 2);
        for (const Slot& s : slots_)
            if (s.key != kEmpty) place(bigger, s.key, s.value);
        slots_.swap(bigger);
    }

    std::vector<Slot> slots_;
    size_t size_ = 0;
};

}  // namespace floe
