// The tracking allocator: every byte the runtime holds is allocated here, with a category and a name.
//
// Vocabulary follows PyTorch's allocator statistics (torch.cuda.memory_stats):
//   allocated_bytes  bytes held, after rounding each block up to kAlignment (what memory really costs)
//   requested_bytes  bytes the caller asked for (unrounded)
//   each as {current, peak, allocated (cumulative), freed (cumulative)}, per category and in total;
//   num_allocs / num_frees; reset_peak_stats().
// Like PyTorch's caching allocator, freed blocks are kept and handed out again to a request of the same
// rounded size, so a training step that repeats its allocations touches no new pages after the first step
// (first touch costs ~14 µs per 4 KiB page here). reserved_bytes counts what is held, cache included;
// allocated_bytes only what is in use. empty_cache() returns the cache to the OS.
// On top of PyTorch: peak_breakdown (bytes per category at the moment of the *global* peak) and the live
// blocks at that moment, reconstructed from the timeline of events (time, +/-bytes, category, name),
// which is always on (one 32-byte record per alloc/free).
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runtime/category.h"
#include "runtime/dtype.h"
#include "runtime/ledger.h"

namespace reckon {

constexpr int64_t kAlignment = 64;  // one cache line, one AVX-512 vector

// One statistic, PyTorch-style.
struct Stat {
  int64_t current = 0;
  int64_t peak = 0;
  int64_t allocated = 0;  // cumulative bytes ever allocated
  int64_t freed = 0;      // cumulative bytes ever freed
};

struct CategoryStats {
  Stat allocated_bytes;
  Stat requested_bytes;
  int64_t num_allocs = 0;
  int64_t num_frees = 0;
};

// One allocation or free, as the timeline keeps it.
struct MemoryEvent {
  int64_t time_ns;      // runtime clock (runtime/clock.h)
  int64_t delta_bytes;  // +allocated bytes on alloc, -allocated bytes on free
  int64_t requested_bytes;
  int64_t block_id;  // pairs a free with its alloc
  int32_t name_id;   // index into MemoryStats::names / tracker names
  Category category;
  DType dtype;
};

// One allocation or free with its tensor's name: what the runtime's timeline and the memory replay
// (estimators/memory.h) both write, so the two can be compared event by event.
struct AllocationEvent {
  std::string name;
  Category category;
  int64_t bytes;  // allocated (64-byte rounded)
  bool alloc;     // false: a free
  bool operator==(const AllocationEvent&) const = default;
};
std::string describe(const AllocationEvent& e);  // "alloc layers.0.attn.q (activation, 4,096 B)"

// The first index at which two event sequences differ (-1: equal), and what differs there.
struct EventDivergence {
  int64_t index = -1;
  std::string text;  // "event 37 of 120 measured / 121 analytic: measured free …, analytic alloc …"
};
EventDivergence first_divergence(const std::vector<AllocationEvent>& measured,
                                 const std::vector<AllocationEvent>& analytic);

struct LiveBlock {
  std::string name;
  Category category;
  int64_t requested_bytes;
  int64_t allocated_bytes;
  DType dtype = DType::f32;  // of the tensor the block holds (oneDNN's scratchpad is counted as float32)
};

struct MemoryStats {
  std::array<CategoryStats, kNumCategories> by_category;
  CategoryStats total;
  // Bytes (allocated) per category at the moment the total first reached its current peak.
  std::array<int64_t, kNumCategories> peak_breakdown{};
  const CategoryStats& operator[](Category c) const { return by_category[static_cast<int>(c)]; }
};

// The largest single allocation: leaves room for rounding and for pointer arithmetic on the block.
constexpr int64_t kMaxAllocationBytes = std::numeric_limits<int64_t>::max() / 4;

// Round up to kAlignment; throws std::invalid_argument for sizes outside [1, kMaxAllocationBytes].
int64_t aligned_size(int64_t bytes);

class TrackingAllocator {
 public:
  TrackingAllocator() = default;
  ~TrackingAllocator() { empty_cache(); }
  TrackingAllocator(const TrackingAllocator&) = delete;
  TrackingAllocator& operator=(const TrackingAllocator&) = delete;

  // Memory for `bytes` (> 0) bytes, 64-byte aligned, tracked under `category` and `name`.
  // Throws std::invalid_argument for bytes <= 0 or too large, std::bad_alloc when the OS says no.
  void* allocate(int64_t bytes, Category category, std::string_view name, DType dtype = DType::f32);
  void free(void* ptr);  // ptr must come from allocate(); nullptr is a no-op

  MemoryStats stats() const;
  // Bytes held from the OS: in use + cached for reuse.
  int64_t reserved_bytes() const;
  void empty_cache();
  void set_caching(bool on);   // on by default
  void set_timeline(bool on);  // on by default; off: no events are recorded (peak moment replay unavailable)
  // Peak := current (per category and total); the peak moment becomes now.
  void reset_peak_stats();
  // Live blocks at the moment of the global peak, largest first (replayed from the timeline).
  std::vector<LiveBlock> live_at_peak() const;
  // Live blocks now, largest first.
  std::vector<LiveBlock> live_now() const;
  std::vector<MemoryEvent> timeline() const;
  // The timeline since the last clear_timeline(), with names.
  std::vector<AllocationEvent> events() const;
  std::string event_name(const MemoryEvent& e) const;
  // Forget the history before now (the live blocks stay tracked; the peak resets to current).
  void clear_timeline();
  // Bytes (allocated) currently live under a name prefix, e.g. "layers.0." — for tests and reports.
  int64_t live_bytes_with_prefix(std::string_view prefix) const;
  // Untracked (UntrackedScope): allocations are the OS's, outside every statistic, the timeline and the cache —
  // for the machine's probes (the matmul and bandwidth rates), which are not part of anything the user measures.
  void set_untracked(bool on);
  bool untracked() const;

 private:
  struct Block {
    int64_t id;
    int64_t requested;
    int64_t allocated;
    int32_t name_id;
    Category category;
    DType dtype;
  };
  int32_t intern(std::string_view name);
  void reset_peaks_locked();
  std::vector<LiveBlock> replay_locked(int64_t num_events) const;

  mutable std::mutex mutex_;
  std::unordered_map<void*, Block> live_;
  std::unordered_multimap<int64_t, void*> cache_;      // allocated size -> free block
  std::unordered_map<void*, int64_t> untracked_live_;  // blocks allocated while untracked, freed as they came
  bool untracked_ = false;
  int64_t cached_bytes_ = 0;
  bool timeline_on_ = true;
#if defined(__SANITIZE_ADDRESS__)
  bool caching_ = false;  // reused blocks would hide use-after-free from ASan
#else
  bool caching_ = true;
#endif
  std::unordered_map<std::string, int32_t> name_ids_;
  std::vector<std::string> names_;
  std::vector<MemoryEvent> timeline_;
  // Live blocks at the start of the timeline (after clear_timeline), so replay starts from them.
  std::vector<Block> timeline_base_;
  PeakLedger<int64_t> ledger_;  // the global peak's moment: its breakdown, and timeline_[0, peak_event) rebuilds it
  int64_t next_block_id_ = 0;
  MemoryStats stats_;
};

// The process-wide allocator every Tensor uses.
TrackingAllocator& tracker();

// While alive, the process-wide allocator does not track (TrackingAllocator::set_untracked); restores the mode.
class UntrackedScope {
 public:
  UntrackedScope() : was_(tracker().untracked()) { tracker().set_untracked(true); }
  ~UntrackedScope() { tracker().set_untracked(was_); }
  UntrackedScope(const UntrackedScope&) = delete;
  UntrackedScope& operator=(const UntrackedScope&) = delete;

 private:
  bool was_;
};

}  // namespace reckon
