#include "cli/report.h"

#include <fmt/format.h>

#include "cli/table.h"

namespace reckon {

std::string memory_table(const MemoryStats& s) {
  Table t;
  t.header = {"category", "current (B)", "peak (B)", "at global peak (B)", "at peak (MiB)", "at peak (%)",
              "allocs", "frees"};
  t.right_align = {false, true, true, true, true, true, true, true};
  const double peak_total = static_cast<double>(s.total.allocated_bytes.peak);
  for (Category c : all_categories()) {
    const CategoryStats& cs = s[c];
    const int64_t at_peak = s.peak_breakdown[static_cast<int>(c)];
    t.add({category_name(c), fmt_int(cs.allocated_bytes.current), fmt_int(cs.allocated_bytes.peak),
           fmt_int(at_peak), fmt_bytes_mib(at_peak),
           fmt::format("{:.1f}", peak_total > 0 ? 100.0 * at_peak / peak_total : 0.0), fmt_int(cs.num_allocs),
           fmt_int(cs.num_frees)});
  }
  t.add({"**total**", fmt_int(s.total.allocated_bytes.current), fmt_int(s.total.allocated_bytes.peak),
         fmt_int(s.total.allocated_bytes.peak), fmt_bytes_mib(s.total.allocated_bytes.peak), "100.0",
         fmt_int(s.total.num_allocs), fmt_int(s.total.num_frees)});
  return t.markdown() + fmt::format("allocated_bytes (64-byte blocks); requested_bytes.peak = {} B\n",
                                    fmt_int(s.total.requested_bytes.peak));
}

std::string live_at_peak_table(const TrackingAllocator& alloc, int top_n) {
  Table t;
  t.header = {"tensor live at peak", "category", "bytes", "MiB"};
  t.right_align = {false, false, true, true};
  const auto blocks = alloc.live_at_peak();
  int shown = 0;
  for (const auto& b : blocks) {
    if (shown++ == top_n) break;
    t.add({b.name, category_name(b.category), fmt_int(b.allocated_bytes), fmt_bytes_mib(b.allocated_bytes)});
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

}  // namespace reckon
