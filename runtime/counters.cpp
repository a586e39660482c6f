#include "runtime/counters.h"

#include "runtime/allocator.h"
#include "runtime/checked.h"
#include "runtime/clock.h"

namespace reckon {

const char* phase_name(Phase p) {
  switch (p) {
    case Phase::forward:
      return "forward";
    case Phase::backward:
      return "backward";
    case Phase::recompute:
      return "recompute";
    case Phase::optimizer:
      return "optimizer";
    case Phase::communication:
      return "communication";
  }
  return "?";
}

int64_t OpCount::flops() const { return (CheckedInt(matmul_flops) + other_flops).value(); }

OpCount& OpCount::operator+=(const OpCount& o) {
  // Checked: estimators sum whole-model counts here, and a wrapped sum would be a silently wrong number.
  calls = (CheckedInt(calls) + o.calls).value();
  matmul_flops = (CheckedInt(matmul_flops) + o.matmul_flops).value();
  other_flops = (CheckedInt(other_flops) + o.other_flops).value();
  bytes_read = (CheckedInt(bytes_read) + o.bytes_read).value();
  bytes_written = (CheckedInt(bytes_written) + o.bytes_written).value();
  seconds += o.seconds;
  return *this;
}

void Counters::add(std::string_view op, const OpCount& count) {
  // Heterogeneous lookup would need a transparent comparator on a pair; ops are few, a string is cheap.
  by_op_[OpKey{std::string(op), phase_}] += count;
}

OpCount Counters::get(std::string_view op, Phase phase) const {
  auto it = by_op_.find(OpKey{std::string(op), phase});
  return it == by_op_.end() ? OpCount{} : it->second;
}

OpCount Counters::phase_total(Phase phase) const {
  OpCount sum;
  for (const auto& [key, count] : by_op_) {
    if (key.phase == phase) sum += count;
  }
  return sum;
}

OpCount Counters::total() const {
  OpCount sum;
  for (const auto& [key, count] : by_op_) sum += count;
  return sum;
}

void set_instrumentation(bool on) {
  counters().set_enabled(on);
  tracker().set_timeline(on);
}

Counters& counters() {
  static Counters instance;
  return instance;
}

OpRecord::OpRecord(std::string_view op) : op_(op), start_ns_(0), enabled_(counters().enabled()) {
  if (enabled_) start_ns_ = now_ns();
}

OpRecord::~OpRecord() {
  if (!enabled_) return;
  const int64_t end_ns = now_ns();
  count.calls = 1;
  count.seconds = static_cast<double>(end_ns - start_ns_) * 1e-9;
  Counters& c = counters();
  c.add(op_, count);
  if (c.record_events()) c.add_event(OpEvent{std::string(op_), c.phase(), start_ns_, end_ns - start_ns_});
}

}  // namespace reckon
