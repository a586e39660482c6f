// Counters: one small, obvious place (like tinygrad's GlobalCounters) that records, per op name x phase,
// how many calls ran and how many FLOPs and bytes they executed, and the wall time they took.
// Counting conventions (matmul = 2*M*N*K, what elementwise ops count, bytes = tensor reads/writes by the
// op's loops) are documented once, in docs/conventions.md.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace reckon {

// recompute: forward ops re-run during backward (config field `recompute`): counted apart from the model's own
// forward and backward, so model FLOPs (MFU) and executed FLOPs (HFU) both come out of the counters.
// communication: data-parallel collectives (runtime/comm.h), per collective: calls, bytes in, bytes out, time.
enum class Phase : uint8_t { forward, backward, recompute, optimizer, communication };
constexpr int kNumPhases = 5;
constexpr std::array<Phase, kNumPhases> kAllPhases = {Phase::forward, Phase::backward, Phase::recompute,
                                                      Phase::optimizer, Phase::communication};
const char* phase_name(Phase p);

struct OpCount {
  int64_t calls = 0;
  int64_t matmul_flops = 0;
  int64_t other_flops = 0;
  int64_t bytes_read = 0;
  int64_t bytes_written = 0;
  double seconds = 0.0;

  int64_t flops() const;  // matmul + other, checked
  OpCount& operator+=(const OpCount& o);
};

struct OpKey {
  std::string op;
  Phase phase;
  bool operator<(const OpKey& o) const { return phase != o.phase ? phase < o.phase : op < o.op; }
};

// One op call, for traces (kept only while recording is on).
struct OpEvent {
  std::string op;
  Phase phase;
  int64_t start_ns;  // runtime clock (runtime/clock.h)
  int64_t duration_ns;
};

class Counters {
 public:
  // Adds `count` to (op, current phase). Called by every op once per call.
  void add(std::string_view op, const OpCount& count);
  Phase phase() const { return phase_; }
  void set_phase(Phase p) { phase_ = p; }

  const std::map<OpKey, OpCount>& by_op() const { return by_op_; }
  OpCount get(std::string_view op, Phase phase) const;  // zero if never recorded
  OpCount phase_total(Phase phase) const;
  OpCount total() const;
  void reset() { by_op_.clear(); }

  // Off: OpRecord reads no clock and records nothing (for measuring what instrumentation costs).
  void set_enabled(bool on) { enabled_ = on; }
  bool enabled() const { return enabled_; }

  // Per-call events for a trace: off by default (one small record per op call when on).
  void set_record_events(bool on) { record_events_ = on; }
  bool record_events() const { return record_events_; }
  void add_event(OpEvent e) { events_.push_back(std::move(e)); }
  const std::vector<OpEvent>& events() const { return events_; }
  void clear_events() { events_.clear(); }

 private:
  std::map<OpKey, OpCount> by_op_;
  std::vector<OpEvent> events_;
  bool record_events_ = false;
  bool enabled_ = true;
  Phase phase_ = Phase::forward;
};

// The process-wide counters every op records into.
Counters& counters();

// Instrumentation on/off in one switch: the counters and the allocator's timeline. The allocator's byte
// statistics stay on (they are a few integer additions per allocation).
void set_instrumentation(bool on);

// Sets the phase for a scope and restores the previous one.
class PhaseScope {
 public:
  explicit PhaseScope(Phase p) : previous_(counters().phase()) { counters().set_phase(p); }
  ~PhaseScope() { counters().set_phase(previous_); }
  PhaseScope(const PhaseScope&) = delete;
  PhaseScope& operator=(const PhaseScope&) = delete;

 private:
  Phase previous_;
};

// Times one op call: construct before the work, fill `count` (FLOPs/bytes), and the destructor records
// calls = 1 and the elapsed seconds under the op's name and the current phase.
class OpRecord {
 public:
  explicit OpRecord(std::string_view op);
  ~OpRecord();
  OpRecord(const OpRecord&) = delete;
  OpRecord& operator=(const OpRecord&) = delete;
  OpCount count;

 private:
  std::string_view op_;
  int64_t start_ns_;
  bool enabled_;
};

}  // namespace reckon
