#include "cli/report.h"

#include <algorithm>
#include <array>

#include <fmt/format.h>

#include "cli/table.h"
#include "estimators/time.h"

namespace reckon {

std::string memory_table(const MemoryStats& s) {
  Table t;
  t.header = {"category",      "current (B)", "peak (B)", "at global peak (B)",
              "at peak (MiB)", "at peak (%)", "allocs",   "frees"};
  t.right_align = {false, true, true, true, true, true, true, true};
  const double peak_total = static_cast<double>(s.total.allocated_bytes.peak);
  for (Category c : all_categories()) {
    const CategoryStats& cs = s[c];
    const int64_t at_peak = s.peak_breakdown[static_cast<int>(c)];
    t.add({category_name(c), fmt_int(cs.allocated_bytes.current), fmt_int(cs.allocated_bytes.peak), fmt_int(at_peak),
           fmt_bytes_mib(at_peak), fmt::format("{:.1f}", peak_total > 0 ? 100.0 * at_peak / peak_total : 0.0),
           fmt_int(cs.num_allocs), fmt_int(cs.num_frees)});
  }
  t.add({"**total**", fmt_int(s.total.allocated_bytes.current), fmt_int(s.total.allocated_bytes.peak),
         fmt_int(s.total.allocated_bytes.peak), fmt_bytes_mib(s.total.allocated_bytes.peak), "100.0",
         fmt_int(s.total.num_allocs), fmt_int(s.total.num_frees)});
  return t.markdown() + fmt::format("allocated_bytes (64-byte blocks); requested_bytes.peak = {} B\n",
                                    fmt_int(s.total.requested_bytes.peak));
}

std::string live_at_peak_table(const TrackingAllocator& alloc, int top_n) {
  Table t;
  t.header = {"tensor live at peak", "category", "dtype", "bytes", "MiB"};
  t.right_align = {false, false, false, true, true};
  const auto blocks = alloc.live_at_peak();
  int shown = 0;
  for (const auto& b : blocks) {
    if (shown++ == top_n) break;
    t.add({b.name, category_name(b.category), dtype_name(b.dtype), fmt_int(b.allocated_bytes),
           fmt_bytes_mib(b.allocated_bytes)});
  }
  std::string out = t.markdown();
  if (static_cast<int>(blocks.size()) > top_n) {
    out += fmt::format("({} of {} live tensors shown)\n", top_n, blocks.size());
  }
  return out;
}

std::string counters_table(const Counters& c) {
  Table t;
  t.header = {"op", "phase", "calls", "matmul GFLOP", "other GFLOP", "read MB", "written MB", "ms", "GFLOP/s"};
  t.right_align = {false, false, true, true, true, true, true, true, true};
  auto row = [&](const std::string& op, const std::string& phase, const OpCount& n) {
    t.add({op, phase, fmt_int(n.calls), fmt::format("{:.4f}", n.matmul_flops * 1e-9),
           fmt::format("{:.4f}", n.other_flops * 1e-9), fmt::format("{:.3f}", n.bytes_read * 1e-6),
           fmt::format("{:.3f}", n.bytes_written * 1e-6), fmt::format("{:.3f}", n.seconds * 1e3),
           fmt::format("{:.1f}", n.seconds > 0 ? n.flops() * 1e-9 / n.seconds : 0.0)});
  };
  for (const auto& [key, n] : c.by_op()) row(key.op, phase_name(key.phase), n);
  row("**total**", "", c.total());
  return t.markdown();
}

std::string phase_totals_table(const Counters& c, int64_t steps, double peak_gflops) {
  Table t;
  t.header = {"phase", "GFLOP / step", "matmul share", "ms / step", "GFLOP/s", "% of peak"};
  t.right_align = {false, true, true, true, true, true};
  const double s = static_cast<double>(std::max<int64_t>(steps, 1));
  auto row = [&](const std::string& name, const OpCount& n) {
    const double gflop = n.flops() * 1e-9 / s, ms = n.seconds * 1e3 / s;
    const double rate = n.seconds > 0 ? n.flops() * 1e-9 / n.seconds : 0.0;
    t.add({name, fmt::format("{:.4f}", gflop),
           fmt::format("{:.1f}%", n.flops() > 0 ? 100.0 * n.matmul_flops / n.flops() : 0.0), fmt::format("{:.2f}", ms),
           fmt::format("{:.1f}", rate), fmt::format("{:.1f}%", peak_gflops > 0 ? 100.0 * rate / peak_gflops : 0.0)});
  };
  for (Phase p : kAllPhases) {
    // recompute and communication: when they ran
    if ((p != Phase::recompute && p != Phase::communication) || c.phase_total(p).calls > 0)
      row(phase_name(p), c.phase_total(p));
  }
  row("**step**", c.total());
  return t.markdown();
}

std::string profile_table(const Counters& c, int64_t steps, const Roofline& machine) {
  const double s = static_cast<double>(std::max<int64_t>(steps, 1));
  const std::vector<RooflineRow> roof = roofline_step(c.by_op(), machine);
  std::vector<std::pair<OpKey, std::pair<OpCount, RooflineRow>>> rows;
  size_t i = 0;
  for (const auto& [key, n] : c.by_op()) rows.push_back({key, {n, roof[i++]}});
  std::stable_sort(rows.begin(), rows.end(),
                   [](const auto& a, const auto& b) { return a.second.first.seconds > b.second.first.seconds; });
  const double total = c.total().seconds;
  Table t;
  t.header = {"op", "phase", "ms / step", "share", "GFLOP/s", "GB/s", "roofline ms", "% of roofline", "bound"};
  t.right_align = {false, false, true, true, true, true, true, true, false};
  for (const auto& [key, pr] : rows) {
    const OpCount& n = pr.first;
    const RooflineRow& r = pr.second;
    t.add({key.op, phase_name(key.phase), fmt::format("{:.2f}", n.seconds * 1e3 / s),
           fmt::format("{:.1f}%", total > 0 ? 100.0 * n.seconds / total : 0.0),
           fmt::format("{:.1f}", n.seconds > 0 ? n.flops() * 1e-9 / n.seconds : 0.0),
           fmt::format("{:.1f}", n.seconds > 0 ? (n.bytes_read + n.bytes_written) * 1e-9 / n.seconds : 0.0),
           fmt::format("{:.2f}", r.seconds * 1e3 / s),
           fmt::format("{:.0f}%", n.seconds > 0 ? 100.0 * r.seconds / n.seconds : 0.0),
           r.memory_bound ? "memory" : "compute"});
  }
  return t.markdown() + fmt::format(
                            "roofline of this CPU (measured): matmul {:.0f} GFLOP/s, other arithmetic {:.0f} "
                            "GFLOP/s, memory {:.1f} GB/s\n",
                            machine.matmul_flops * 1e-9, machine.other_flops * 1e-9, machine.bytes_per_second * 1e-9);
}

namespace {
nlohmann::json stat_json(const Stat& s) {
  return {{"current", s.current}, {"peak", s.peak}, {"allocated", s.allocated}, {"freed", s.freed}};
}
nlohmann::json count_json(const OpCount& n) {
  return {{"calls", n.calls},    {"matmul_flops", n.matmul_flops}, {"other_flops", n.other_flops},
          {"flops", n.flops()},  {"bytes_read", n.bytes_read},     {"bytes_written", n.bytes_written},
          {"seconds", n.seconds}};
}
}  // namespace

nlohmann::json memory_json(const TrackingAllocator& alloc, int top_n) {
  const MemoryStats s = alloc.stats();
  nlohmann::json j;
  for (Category cat : all_categories()) {
    const CategoryStats& cs = s[cat];
    j["allocated_bytes"][category_name(cat)] = stat_json(cs.allocated_bytes);
    j["requested_bytes"][category_name(cat)] = stat_json(cs.requested_bytes);
    j["num_allocs"][category_name(cat)] = cs.num_allocs;
    j["num_frees"][category_name(cat)] = cs.num_frees;
    j["peak_breakdown"][category_name(cat)] = s.peak_breakdown[static_cast<int>(cat)];
  }
  j["allocated_bytes"]["all"] = stat_json(s.total.allocated_bytes);
  j["requested_bytes"]["all"] = stat_json(s.total.requested_bytes);
  j["num_allocs"]["all"] = s.total.num_allocs;
  j["num_frees"]["all"] = s.total.num_frees;
  nlohmann::json live = nlohmann::json::array();
  int shown = 0;
  for (const LiveBlock& b : alloc.live_at_peak()) {
    if (shown++ == top_n) break;
    live.push_back({{"name", b.name},
                    {"category", category_name(b.category)},
                    {"dtype", dtype_name(b.dtype)},
                    {"allocated_bytes", b.allocated_bytes},
                    {"requested_bytes", b.requested_bytes}});
  }
  j["live_at_peak"] = live;
  return j;
}

nlohmann::json counters_json(const Counters& c, int64_t steps, double peak_gflops) {
  nlohmann::json j;
  j["measured_steps"] = steps;
  nlohmann::json ops = nlohmann::json::array();
  for (const auto& [key, n] : c.by_op()) {
    nlohmann::json o = count_json(n);
    o["op"] = key.op;
    o["phase"] = phase_name(key.phase);
    ops.push_back(o);
  }
  j["ops"] = ops;
  for (Phase p : kAllPhases) j["phase_totals"][phase_name(p)] = count_json(c.phase_total(p));
  const OpCount total = c.total();
  j["total"] = count_json(total);
  j["peak_gflops"] = peak_gflops;
  j["achieved_gflops"] = total.seconds > 0 ? total.flops() * 1e-9 / total.seconds : 0.0;
  j["fraction_of_peak"] =
      total.seconds > 0 && peak_gflops > 0 ? total.flops() * 1e-9 / total.seconds / peak_gflops : 0.0;
  return j;
}

nlohmann::json trace_json(const Counters& c, const TrackingAllocator& alloc) {
  nlohmann::json events = nlohmann::json::array();
  const int pid = 1;
  for (Phase p : kAllPhases) {
    events.push_back({{"name", "thread_name"},
                      {"ph", "M"},
                      {"pid", pid},
                      {"tid", static_cast<int>(p) + 1},
                      {"args", {{"name", phase_name(p)}}}});
  }
  for (const OpEvent& e : c.events()) {
    events.push_back({{"name", e.op},
                      {"cat", phase_name(e.phase)},
                      {"ph", "X"},
                      {"pid", pid},
                      {"tid", static_cast<int>(e.phase) + 1},
                      {"ts", e.start_ns * 1e-3},
                      {"dur", e.duration_ns * 1e-3}});
  }
  // Counter track: allocated bytes per category after every event, replayed from the timeline. Live
  // blocks from before the timeline began are not in it, so start from the current totals minus the net
  // change the timeline records.
  const std::vector<MemoryEvent> timeline = alloc.timeline();
  std::array<int64_t, kNumCategories> bytes{};
  const MemoryStats s = alloc.stats();
  for (Category cat : all_categories()) bytes[static_cast<int>(cat)] = s[cat].allocated_bytes.current;
  for (const MemoryEvent& e : timeline) bytes[static_cast<int>(e.category)] -= e.delta_bytes;
  for (const MemoryEvent& e : timeline) {
    bytes[static_cast<int>(e.category)] += e.delta_bytes;
    nlohmann::json args;
    for (Category cat : all_categories()) args[category_name(cat)] = bytes[static_cast<int>(cat)];
    events.push_back(
        {{"name", "allocated_bytes"}, {"ph", "C"}, {"pid", pid}, {"ts", e.time_ns * 1e-3}, {"args", args}});
  }
  return {{"traceEvents", events}, {"displayTimeUnit", "ms"}};
}

}  // namespace reckon
