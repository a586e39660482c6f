#include "runtime/allocator.h"

#include "runtime/clock.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <limits>
#include <new>
#include <cstdio>
#include <stdexcept>

#include <fmt/format.h>

namespace reckon {

namespace {

void add(Stat& s, int64_t bytes) {
  s.current += bytes;
  s.allocated += bytes;
  s.peak = std::max(s.peak, s.current);
}

void sub(Stat& s, int64_t bytes) {
  s.current -= bytes;
  s.freed += bytes;
}

std::vector<LiveBlock> sorted_largest_first(std::vector<LiveBlock> blocks) {
  std::stable_sort(blocks.begin(), blocks.end(), [](const LiveBlock& a, const LiveBlock& b) {
    if (a.allocated_bytes != b.allocated_bytes) return a.allocated_bytes > b.allocated_bytes;
    return a.name < b.name;
  });
  return blocks;
}
}  // namespace

const char* category_name(Category c) {
  switch (c) {
    case Category::parameter:
      return "parameter";
    case Category::gradient:
      return "gradient";
    case Category::optimizer_state:
      return "optimizer_state";
    case Category::activation:
      return "activation";
    case Category::temporary:
      return "temporary";
  }
  return "?";
}

std::array<Category, kNumCategories> all_categories() {
  return {Category::parameter, Category::gradient, Category::optimizer_state, Category::activation,
          Category::temporary};
}

int64_t aligned_size(int64_t bytes) {
  if (bytes <= 0 || bytes > kMaxAllocationBytes) {
    throw std::invalid_argument(
        fmt::format("allocation size: {} bytes is outside the allowed range [1, {}]", bytes, kMaxAllocationBytes));
  }
  return (bytes + kAlignment - 1) / kAlignment * kAlignment;
}

void* TrackingAllocator::allocate(int64_t bytes, Category category, std::string_view name, DType dtype) {
  const int64_t allocated = aligned_size(bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  if (untracked_) {
    void* raw = std::aligned_alloc(static_cast<size_t>(kAlignment), static_cast<size_t>(allocated));
    if (raw == nullptr) throw std::bad_alloc();
    untracked_live_.emplace(raw, allocated);
    return raw;
  }
  void* ptr = nullptr;
  if (auto hit = cache_.find(allocated); hit != cache_.end()) {
    ptr = hit->second;
    cache_.erase(hit);
    cached_bytes_ -= allocated;
  } else {
    ptr = std::aligned_alloc(static_cast<size_t>(kAlignment), static_cast<size_t>(allocated));
    if (ptr == nullptr) throw std::bad_alloc();
  }
  const int32_t name_id = intern(name);
  const Block block{next_block_id_++, bytes, allocated, name_id, category, dtype};
  live_.emplace(ptr, block);

  CategoryStats& cat = stats_.by_category[static_cast<int>(category)];
  for (CategoryStats* s : {&cat, &stats_.total}) {
    add(s->allocated_bytes, allocated);
    add(s->requested_bytes, bytes);
    s->num_allocs += 1;
  }
  if (timeline_on_) timeline_.push_back({now_ns(), allocated, bytes, block.id, name_id, category, dtype});
  // A new global peak is reached only by an allocation; the ledger keeps the first moment the peak was reached.
  if (ledger_.add(category, allocated, static_cast<int64_t>(timeline_.size()))) {
    for (Category c : all_categories()) stats_.peak_breakdown[static_cast<int>(c)] = ledger_.peak_breakdown(c);
  }
  return ptr;
}

void TrackingAllocator::free(void* ptr) {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  if (auto raw = untracked_live_.find(ptr); raw != untracked_live_.end()) {
    untracked_live_.erase(raw);
    std::free(ptr);
    return;
  }
  auto it = live_.find(ptr);
  if (it == live_.end()) {
    // Freeing memory we never handed out is a programming error that would corrupt the stats.
    std::fprintf(stderr, "reckon: free of untracked pointer %p\n", ptr);
    std::abort();
  }
  const Block block = it->second;
  live_.erase(it);
  ledger_.remove(block.category, block.allocated);
  CategoryStats& cat = stats_.by_category[static_cast<int>(block.category)];
  for (CategoryStats* s : {&cat, &stats_.total}) {
    sub(s->allocated_bytes, block.allocated);
    sub(s->requested_bytes, block.requested);
    s->num_frees += 1;
  }
  if (timeline_on_) {
    timeline_.push_back(
        {now_ns(), -block.allocated, block.requested, block.id, block.name_id, block.category, block.dtype});
  }
  if (caching_) {
    cache_.emplace(block.allocated, ptr);
    cached_bytes_ += block.allocated;
  } else {
    std::free(ptr);
  }
}

int64_t TrackingAllocator::reserved_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_.total.allocated_bytes.current + cached_bytes_;
}

void TrackingAllocator::set_untracked(bool on) {
  std::lock_guard<std::mutex> lock(mutex_);
  untracked_ = on;
}

bool TrackingAllocator::untracked() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return untracked_;
}

void TrackingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [size, ptr] : cache_) std::free(ptr);
  cache_.clear();
  cached_bytes_ = 0;
}

void TrackingAllocator::set_timeline(bool on) {
  std::lock_guard<std::mutex> lock(mutex_);
  timeline_on_ = on;
}

void TrackingAllocator::set_caching(bool on) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    caching_ = on;
  }
  if (!on) empty_cache();
}

int32_t TrackingAllocator::intern(std::string_view name) {
  auto it = name_ids_.find(std::string(name));
  if (it != name_ids_.end()) return it->second;
  const auto id = static_cast<int32_t>(names_.size());
  names_.emplace_back(name);
  name_ids_.emplace(std::string(name), id);
  return id;
}

MemoryStats TrackingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void TrackingAllocator::reset_peaks_locked() {
  for (CategoryStats& s : stats_.by_category) {
    s.allocated_bytes.peak = s.allocated_bytes.current;
    s.requested_bytes.peak = s.requested_bytes.current;
  }
  stats_.total.allocated_bytes.peak = stats_.total.allocated_bytes.current;
  stats_.total.requested_bytes.peak = stats_.total.requested_bytes.current;
  ledger_.reset_peaks(static_cast<int64_t>(timeline_.size()));
  for (Category c : all_categories()) stats_.peak_breakdown[static_cast<int>(c)] = ledger_.peak_breakdown(c);
}

void TrackingAllocator::reset_peak_stats() {
  std::lock_guard<std::mutex> lock(mutex_);
  reset_peaks_locked();
}

std::vector<LiveBlock> TrackingAllocator::replay_locked(int64_t num_events) const {
  // block id -> block, starting from the blocks that were live when the timeline began.
  std::unordered_map<int64_t, Block> live;
  for (const Block& b : timeline_base_) live.emplace(b.id, b);
  for (int64_t i = 0; i < num_events; ++i) {
    const MemoryEvent& e = timeline_[static_cast<size_t>(i)];
    if (e.delta_bytes > 0) {
      live.emplace(e.block_id, Block{e.block_id, e.requested_bytes, e.delta_bytes, e.name_id, e.category, e.dtype});
    } else {
      live.erase(e.block_id);
    }
  }
  std::vector<LiveBlock> out;
  out.reserve(live.size());
  for (const auto& [id, b] : live) {
    out.push_back({names_[static_cast<size_t>(b.name_id)], b.category, b.requested, b.allocated, b.dtype});
  }
  return sorted_largest_first(std::move(out));
}

std::vector<LiveBlock> TrackingAllocator::live_at_peak() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return replay_locked(ledger_.peak_event());
}

std::vector<LiveBlock> TrackingAllocator::live_now() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<LiveBlock> out;
  out.reserve(live_.size());
  for (const auto& [ptr, b] : live_) {
    out.push_back({names_[static_cast<size_t>(b.name_id)], b.category, b.requested, b.allocated, b.dtype});
  }
  return sorted_largest_first(std::move(out));
}

std::vector<MemoryEvent> TrackingAllocator::timeline() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return timeline_;
}

std::vector<AllocationEvent> TrackingAllocator::events() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<AllocationEvent> out;
  out.reserve(timeline_.size());
  for (const MemoryEvent& e : timeline_) {
    out.push_back({names_[static_cast<size_t>(e.name_id)], e.category,
                   e.delta_bytes > 0 ? e.delta_bytes : -e.delta_bytes, e.delta_bytes > 0});
  }
  return out;
}

std::string describe(const AllocationEvent& e) {
  return fmt::format("{} {} ({}, {} B)", e.alloc ? "alloc" : "free", e.name, category_name(e.category), e.bytes);
}

EventDivergence first_divergence(const std::vector<AllocationEvent>& measured,
                                 const std::vector<AllocationEvent>& analytic) {
  const size_t n = std::min(measured.size(), analytic.size());
  size_t i = 0;
  while (i < n && measured[i] == analytic[i]) ++i;
  if (i == n && measured.size() == analytic.size()) return {};
  auto side = [&](const std::vector<AllocationEvent>& events) {
    return i < events.size() ? describe(events[i]) : std::string("nothing (the sequence has ended)");
  };
  return {static_cast<int64_t>(i), fmt::format("event {} of {} measured / {} analytic: measured {}; analytic {}", i,
                                               measured.size(), analytic.size(), side(measured), side(analytic))};
}

std::string TrackingAllocator::event_name(const MemoryEvent& e) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return names_.at(static_cast<size_t>(e.name_id));
}

void TrackingAllocator::clear_timeline() {
  std::lock_guard<std::mutex> lock(mutex_);
  timeline_.clear();
  timeline_base_.clear();
  for (const auto& [ptr, b] : live_) timeline_base_.push_back(b);
  reset_peaks_locked();
}

int64_t TrackingAllocator::live_bytes_with_prefix(std::string_view prefix) const {
  std::lock_guard<std::mutex> lock(mutex_);
  int64_t total = 0;
  for (const auto& [ptr, b] : live_) {
    if (std::string_view(names_[static_cast<size_t>(b.name_id)]).substr(0, prefix.size()) == prefix) {
      total += b.allocated;
    }
  }
  return total;
}

TrackingAllocator& tracker() {
  static TrackingAllocator instance;
  return instance;
}

}  // namespace reckon
