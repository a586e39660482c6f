#include "runtime/counters.h"

namespace reckon {

const char* phase_name(Phase p) {
  switch (p) {
    case Phase::forward: return "forward";
    case Phase::backward: return "backward";
    case Phase::optimizer: return "optimizer";
  }
  return "?";
}

OpCount& OpCount::operator+=(const OpCount& o) {
  calls += o.calls;
  matmul_flops += o.matmul_flops;
  other_flops += o.other_flops;
  bytes_read += o.bytes_read;
  bytes_written += o.bytes_written;
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

Counters& counters() {
  static Counters instance;
  return instance;
}

OpRecord::~OpRecord() {
  count.calls = 1;
  count.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  counters().add(op_, count);
}

}  // namespace reckon
