// The peak bookkeeping the tracking allocator and the memory replay share: bytes live per category and in
// total, each category's own peak, and the global peak with its breakdown by category and its position in the
// event log, taken at the *first* moment the total reaches it (a later equal total does not move it). One
// implementation, so the two sides cannot define "the peak" differently. `Int` is int64_t for the allocator
// (real bytes) and CheckedInt for the replay (a config whose bytes overflow int64 throws instead of wrapping).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>

#include "runtime/category.h"

namespace reckon {

template <typename Int>
class PeakLedger {
 public:
  // `events` = the events logged so far, this one included: they rebuild the live set at a new peak. Returns true
  // when the total reached a new high.
  bool add(Category c, Int bytes, int64_t events) {
    const int i = static_cast<int>(c);
    current_[i] += bytes;
    total_ += bytes;
    category_peak_[i] = std::max(category_peak_[i], current_[i]);
    if (!(total_ > peak_total_)) return false;
    peak_total_ = total_;
    peak_breakdown_ = current_;
    peak_event_ = events;
    return true;
  }
  void remove(Category c, Int bytes) {
    current_[static_cast<int>(c)] -= bytes;
    total_ -= bytes;
  }
  // The peaks become what is live now (reset_peak_stats); `events` logged so far rebuild the live set.
  void reset_peaks(int64_t events) {
    category_peak_ = current_;
    peak_total_ = total_;
    peak_breakdown_ = current_;
    peak_event_ = events;
  }

  Int current(Category c) const { return current_[static_cast<int>(c)]; }
  Int total() const { return total_; }
  Int category_peak(Category c) const { return category_peak_[static_cast<int>(c)]; }
  Int peak_total() const { return peak_total_; }
  Int peak_breakdown(Category c) const { return peak_breakdown_[static_cast<int>(c)]; }
  int64_t peak_event() const { return peak_event_; }  // events [0, peak_event) rebuild the live set at the peak

 private:
  std::array<Int, kNumCategories> current_{}, category_peak_{}, peak_breakdown_{};
  Int total_{}, peak_total_{};
  int64_t peak_event_ = 0;
};

}  // namespace reckon
