#include "cli/html_report.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <filesystem>
#include <fstream>
#include <iterator>

#include <fmt/format.h>

#include "cli/output.h"

namespace reckon {

namespace {

// One colour per category, in category order (parameter, gradient, optimizer_state, activation, temporary);
// the browser test looks for these exact fills.
const char* const kColours[kNumCategories] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2"};

std::string esc(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

const nlohmann::json& field(const nlohmann::json& j, const char* key, const char* where) {
  if (!j.is_object() || !j.contains(key))
    throw std::invalid_argument(fmt::format("report: {} has no '{}'", where, key));
  return j.at(key);
}
double num(const nlohmann::json& j, const char* key, const char* where) {
  const nlohmann::json& v = field(j, key, where);
  if (!v.is_number()) throw std::invalid_argument(fmt::format("report: {}.{} must be a number", where, key));
  return v.get<double>();
}

// Axis units: MiB below 4 GiB, else GiB.
struct ByteUnit {
  double scale;
  const char* name;
};
ByteUnit byte_unit(double max_bytes) {
  return max_bytes < 4.0 * 1073741824.0 ? ByteUnit{1048576.0, "MiB"} : ByteUnit{1073741824.0, "GiB"};
}

// A "nice" tick step (1, 2, 5 × 10^k) giving about `target` ticks over [0, span].
double tick_step(double span, int target) {
  if (span <= 0) return 1;
  const double raw = span / target, p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (raw <= m * p) return m * p;
  }
  return 10 * p;
}

std::string fmt_bytes(double b) {
  if (b >= 1073741824.0) return fmt::format("{:.2f} GiB", b / 1073741824.0);
  if (b >= 1048576.0) return fmt::format("{:.1f} MiB", b / 1048576.0);
  return fmt::format("{:.0f} KiB", b / 1024.0);
}

// The points a timeline keeps: in each of at most max_points buckets of consecutive points, the one with the
// largest total (so the peak always survives).
std::vector<size_t> kept_points(const std::vector<double>& totals, size_t max_points) {
  std::vector<size_t> kept;
  const size_t bucket = std::max<size_t>(1, (totals.size() + max_points - 1) / max_points);
  for (size_t i = 0; i < totals.size(); i += bucket) {
    size_t best = i;
    for (size_t k = i; k < std::min(totals.size(), i + bucket); ++k) {
      if (totals[k] > totals[best]) best = k;
    }
    kept.push_back(best);
  }
  return kept;
}

// ---- The report JSON, checked before anything is drawn: a saved file is input like any other.
constexpr double kMaxReportBytes = 9007199254740992.0;  // 2^53 B (8 PiB): exact in a double, above any machine
constexpr double kMaxReportMs = 1e9;                    // 11.6 days for one step
constexpr double kMaxReportRate = 1e12;                 // GFLOP/s, GB/s, tokens/s, GFLOP per step
constexpr double kMaxReportFlops = 9.2e18;              // int64 counts
constexpr size_t kMaxReportRows = 10000;                // ops, phases, largest tensors (a run has ~100 ops)
constexpr size_t kMaxStringBytes = 4096;

[[noreturn]] void bad_report(const std::string& key, const std::string& why) {
  throw std::invalid_argument(fmt::format("report: {} {}", key, why));
}
const nlohmann::json& member(const nlohmann::json& j, const std::string& where, const char* key) {
  if (!j.is_object()) bad_report(where, "must be an object");
  const auto it = j.find(key);
  if (it == j.end()) bad_report(where, fmt::format("has no '{}'", key));
  return *it;
}
// A range end as users write it: 45035996273704960, 1000000000000, 0.5.
std::string range_end(double x) {
  return x == std::floor(x) && std::fabs(x) < 9e18 ? fmt::format("{}", static_cast<int64_t>(x)) : fmt::format("{}", x);
}
double number_in(const nlohmann::json& v, const std::string& key, double lo, double hi, bool lo_open = false) {
  if (!v.is_number()) bad_report(key, fmt::format("must be a number, got {}", v.type_name()));
  const double x = v.get<double>();
  if (!std::isfinite(x) || (lo_open ? x <= lo : x < lo) || x > hi)
    bad_report(key, fmt::format("is {}, outside the allowed range {}{}, {}]", v.dump(), lo_open ? "(" : "[",
                                range_end(lo), range_end(hi)));
  return x;
}
double number_at(const nlohmann::json& j, const std::string& where, const char* key, double lo, double hi,
                 bool lo_open = false) {
  return number_in(member(j, where, key), where + "." + key, lo, hi, lo_open);
}
std::string string_at(const nlohmann::json& j, const std::string& where, const char* key) {
  const nlohmann::json& v = member(j, where, key);
  if (!v.is_string()) bad_report(where + "." + key, fmt::format("must be a string, got {}", v.type_name()));
  std::string text = v.get<std::string>();
  if (text.size() > kMaxStringBytes)
    bad_report(where + "." + key, fmt::format("is {} bytes, above the allowed {}", text.size(), kMaxStringBytes));
  return text;
}
const nlohmann::json& array_at(const nlohmann::json& j, const std::string& where, const char* key, size_t max_size) {
  const nlohmann::json& v = member(j, where, key);
  if (!v.is_array()) bad_report(where + "." + key, fmt::format("must be an array, got {}", v.type_name()));
  if (v.size() > max_size)
    bad_report(where + "." + key, fmt::format("has {} entries, above the allowed {}", v.size(), max_size));
  return v;
}
nlohmann::json breakdown_at(const nlohmann::json& j, const std::string& where, const char* key) {
  const nlohmann::json& b = member(j, where, key);
  nlohmann::json out;
  for (Category c : all_categories()) {
    out[category_name(c)] = number_at(b, where + "." + key, category_name(c), 0, kMaxReportBytes);
  }
  return out;
}

// The timeline: t_ms non-decreasing, one value per time and category, thinned to kMaxTimelinePoints.
nlohmann::json checked_timeline(const nlohmann::json& mem) {
  const nlohmann::json& t = array_at(mem, "report.memory", "t_ms", SIZE_MAX);
  if (t.empty()) bad_report("report.memory.t_ms", "must not be empty");
  std::vector<double> times(t.size()), totals(t.size(), 0.0);
  for (size_t i = 0; i < t.size(); ++i) {
    times[i] = number_in(t[i], fmt::format("report.memory.t_ms[{}]", i), 0, kMaxReportMs);
    if (i > 0 && times[i] < times[i - 1]) bad_report(fmt::format("report.memory.t_ms[{}]", i), "goes back in time");
  }
  const nlohmann::json& by_cat = member(mem, "report.memory", "bytes");
  std::vector<std::vector<double>> series;
  for (Category c : all_categories()) {
    const std::string key = fmt::format("report.memory.bytes.{}", category_name(c));
    const nlohmann::json& v = array_at(by_cat, "report.memory.bytes", category_name(c), SIZE_MAX);
    if (v.size() != t.size()) bad_report(key, fmt::format("has {} values for {} times", v.size(), t.size()));
    series.emplace_back(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      series.back()[i] = number_in(v[i], fmt::format("{}[{}]", key, i), 0, kMaxReportBytes);
      totals[i] += series.back()[i];
    }
  }
  nlohmann::json out = {{"t_ms", nlohmann::json::array()}, {"bytes", nlohmann::json::object()}};
  for (Category c : all_categories()) out["bytes"][category_name(c)] = nlohmann::json::array();
  for (size_t i : kept_points(totals, kMaxTimelinePoints)) {
    out["t_ms"].push_back(times[i]);
    for (Category c : all_categories()) out["bytes"][category_name(c)].push_back(series[static_cast<size_t>(c)][i]);
  }
  return out;
}

nlohmann::json checked_memory(const nlohmann::json& report) {
  const nlohmann::json& mem = member(report, "report", "memory");
  nlohmann::json out = checked_timeline(mem);
  const nlohmann::json& peak = member(mem, "report.memory", "peak");
  out["peak"] = {{"t_ms", number_at(peak, "report.memory.peak", "t_ms", 0, kMaxReportMs)},
                 {"total", number_at(peak, "report.memory.peak", "total", 0, kNumCategories * kMaxReportBytes)},
                 {"breakdown", breakdown_at(peak, "report.memory.peak", "breakdown")}};
  if (peak.is_object() && peak.contains("largest")) {
    const nlohmann::json& largest = array_at(peak, "report.memory.peak", "largest", kMaxReportRows);
    out["peak"]["largest"] = nlohmann::json::array();
    for (size_t i = 0; i < largest.size(); ++i) {
      const std::string where = fmt::format("report.memory.peak.largest[{}]", i);
      out["peak"]["largest"].push_back({{"name", string_at(largest[i], where, "name")},
                                        {"bytes", number_at(largest[i], where, "bytes", 0, kMaxReportBytes)}});
    }
  }
  const nlohmann::json& phases = array_at(mem, "report.memory", "phases", kMaxReportRows);
  out["phases"] = nlohmann::json::array();
  for (size_t i = 0; i < phases.size(); ++i) {
    const std::string where = fmt::format("report.memory.phases[{}]", i);
    const double start = number_at(phases[i], where, "start_ms", -kMaxReportMs, kMaxReportMs);
    const double end = number_at(phases[i], where, "end_ms", start, kMaxReportMs);
    out["phases"].push_back({{"phase", string_at(phases[i], where, "phase")}, {"start_ms", start}, {"end_ms", end}});
  }
  out["predicted_peak"] = number_at(mem, "report.memory", "predicted_peak", 0, kNumCategories * kMaxReportBytes);
  out["predicted_breakdown"] = breakdown_at(mem, "report.memory", "predicted_breakdown");
  return out;
}

// Every field the page draws, checked (type, finite, range, sizes), in a copy holding only those fields.
nlohmann::json checked_report(const nlohmann::json& report) {
  if (!report.is_object()) bad_report("report", "must be an object");
  nlohmann::json out;
  for (const char* key : {"title", "config", "machine"}) out[key] = string_at(report, "report", key);
  out["ms_per_step"] = number_at(report, "report", "ms_per_step", 0, kMaxReportMs);
  out["tokens_per_second"] = number_at(report, "report", "tokens_per_second", 0, kMaxReportRate);
  out["memory"] = checked_memory(report);
  const nlohmann::json& ops = array_at(report, "report", "ops", kMaxReportRows);
  out["ops"] = nlohmann::json::array();
  for (size_t i = 0; i < ops.size(); ++i) {
    const std::string where = fmt::format("report.ops[{}]", i);
    out["ops"].push_back({{"op", string_at(ops[i], where, "op")},
                          {"phase", string_at(ops[i], where, "phase")},
                          {"ms", number_at(ops[i], where, "ms", 0, kMaxReportMs)},
                          {"gflop", number_at(ops[i], where, "gflop", 0, kMaxReportRate)},
                          {"gbytes", number_at(ops[i], where, "gbytes", 0, kMaxReportRate)},
                          {"flops", number_at(ops[i], where, "flops", 0, kMaxReportFlops)},
                          {"analytic_flops", number_at(ops[i], where, "analytic_flops", 0, kMaxReportFlops)}});
  }
  const nlohmann::json& roof = member(report, "report", "roofline");
  out["roofline"] = {{"matmul_gflops", number_at(roof, "report.roofline", "matmul_gflops", 0, kMaxReportRate, true)},
                     {"fma_gflops", number_at(roof, "report.roofline", "fma_gflops", 0, kMaxReportRate, true)},
                     {"bandwidth_gbs", number_at(roof, "report.roofline", "bandwidth_gbs", 0, kMaxReportRate, true)}};
  return out;
}

}  // namespace

nlohmann::json memory_timeline_json(const std::vector<MemoryEvent>& events,
                                    const std::array<int64_t, kNumCategories>& base,
                                    const std::vector<OpEvent>& op_events, int64_t max_points) {
  const int64_t t0 = !op_events.empty() ? std::min(op_events.front().start_ns,
                                                   events.empty() ? op_events.front().start_ns : events.front().time_ns)
                     : events.empty()   ? 0
                                        : events.front().time_ns;
  std::array<int64_t, kNumCategories> bytes = base;
  // Every event's state, then thinned to at most max_points by keeping, in each bucket of events, the one with
  // the largest total (so the peak always survives).
  struct Point {
    double t_ms;
    std::array<int64_t, kNumCategories> bytes;
    int64_t total;
  };
  std::vector<Point> all;
  auto total_of = [](const std::array<int64_t, kNumCategories>& b) {
    int64_t s = 0;
    for (int64_t x : b) s += x;
    return s;
  };
  all.push_back({0.0, bytes, total_of(bytes)});
  for (const MemoryEvent& e : events) {
    bytes[static_cast<size_t>(e.category)] += e.delta_bytes;
    all.push_back({static_cast<double>(e.time_ns - t0) * 1e-6, bytes, total_of(bytes)});
  }
  size_t peak = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    if (all[i].total > all[peak].total) peak = i;
  }
  std::vector<double> totals;
  for (const Point& p : all) totals.push_back(static_cast<double>(p.total));
  std::vector<Point> kept;
  for (size_t i : kept_points(totals, static_cast<size_t>(max_points))) kept.push_back(all[i]);
  nlohmann::json j;
  j["t_ms"] = nlohmann::json::array();
  for (int c = 0; c < kNumCategories; ++c)
    j["bytes"][category_name(static_cast<Category>(c))] = nlohmann::json::array();
  for (const Point& p : kept) {
    j["t_ms"].push_back(p.t_ms);
    for (int c = 0; c < kNumCategories; ++c)
      j["bytes"][category_name(static_cast<Category>(c))].push_back(p.bytes[static_cast<size_t>(c)]);
  }
  nlohmann::json breakdown;
  for (int c = 0; c < kNumCategories; ++c)
    breakdown[category_name(static_cast<Category>(c))] = all[peak].bytes[static_cast<size_t>(c)];
  j["peak"] = {{"t_ms", all[peak].t_ms}, {"total", all[peak].total}, {"breakdown", breakdown}};
  // Phase segments from the op events: consecutive ops of one phase merge (zero_grad and AdamW are two separate
  // optimizer segments at either end of the step).
  std::vector<OpEvent> ops = op_events;
  std::sort(ops.begin(), ops.end(), [](const OpEvent& a, const OpEvent& b) { return a.start_ns < b.start_ns; });
  nlohmann::json phases = nlohmann::json::array();
  for (size_t i = 0; i < ops.size();) {
    size_t k = i;
    int64_t end = ops[i].start_ns + ops[i].duration_ns;
    while (k + 1 < ops.size() && ops[k + 1].phase == ops[i].phase)
      end = std::max(end, ops[k + 1].start_ns + ops[k + 1].duration_ns), ++k;
    phases.push_back({{"phase", phase_name(ops[i].phase)},
                      {"start_ms", (ops[i].start_ns - t0) * 1e-6},
                      {"end_ms", (end - t0) * 1e-6}});
    i = k + 1;
  }
  j["phases"] = phases;
  return j;
}

namespace {

// The memory picture of a checked report (checked_report).
std::string draw_memory_svg(const nlohmann::json& report, int width, int height) {
  const nlohmann::json& mem = field(report, "memory", "report");
  const nlohmann::json& t = field(mem, "t_ms", "memory");
  const nlohmann::json& by_cat = field(mem, "bytes", "memory");
  const nlohmann::json& peak = field(mem, "peak", "memory");
  if (!t.is_array() || t.empty()) throw std::invalid_argument("report: memory.t_ms must be a non-empty array");
  const size_t n = t.size();
  std::vector<std::vector<double>> stack(kNumCategories + 1, std::vector<double>(n, 0.0));  // cumulative bottoms
  for (int c = 0; c < kNumCategories; ++c) {
    const nlohmann::json& series = field(by_cat, category_name(static_cast<Category>(c)), "memory.bytes");
    if (!series.is_array() || series.size() != n) {
      throw std::invalid_argument(
          fmt::format("report: memory.bytes.{} must have one value per time", category_name(static_cast<Category>(c))));
    }
    for (size_t i = 0; i < n; ++i)
      stack[static_cast<size_t>(c) + 1][i] = stack[static_cast<size_t>(c)][i] + series[i].get<double>();
  }
  const double predicted = num(mem, "predicted_peak", "memory");
  double ymax = std::max(predicted, num(peak, "total", "memory.peak"));
  for (double v : stack[kNumCategories]) ymax = std::max(ymax, v);
  ymax *= 1.08;
  const double tmax = std::max(1e-6, t.back().get<double>());
  const int left = 80, right = 250, top = 40, bottom = 50;
  const double pw = width - left - right, ph = height - top - bottom;
  auto x = [&](double ms) { return left + pw * ms / tmax; };
  auto y = [&](double b) { return top + ph * (1.0 - b / ymax); };
  const ByteUnit unit = byte_unit(ymax);
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" "
      "font-family=\"sans-serif\" "
      "font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n",
      width, height, width, height);
  s += fmt::format(
      "<text x=\"{}\" y=\"22\" font-size=\"15\" font-weight=\"bold\">Memory over one steady step, by category "
      "(tracking allocator)</text>\n",
      left);
  // Phases as light bands.
  for (const nlohmann::json& p : field(mem, "phases", "memory")) {
    const double a = x(num(p, "start_ms", "phase")), b = x(num(p, "end_ms", "phase"));
    const std::string name = field(p, "phase", "phase").get<std::string>();
    const char* fill = name == "forward"     ? "#f3f3f3"
                       : name == "backward"  ? "#e8eef6"
                       : name == "recompute" ? "#f6eee8"
                                             : "#eef6ea";
    s += fmt::format("<rect x=\"{:.1f}\" y=\"{}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\"/>\n", a, top,
                     std::max(0.5, b - a), ph, fill);
    s += fmt::format("<text x=\"{:.1f}\" y=\"{}\" fill=\"#666\">{}</text>\n", a + 3, top + 14, esc(name));
  }
  // Stacked areas, bottom category first.
  for (int c = 0; c < kNumCategories; ++c) {
    std::string pts;
    for (size_t i = 0; i < n; ++i)
      pts += fmt::format("{:.1f},{:.1f} ", x(t[i].get<double>()), y(stack[static_cast<size_t>(c) + 1][i]));
    for (size_t i = n; i-- > 0;)
      pts += fmt::format("{:.1f},{:.1f} ", x(t[i].get<double>()), y(stack[static_cast<size_t>(c)][i]));
    s += fmt::format("<polygon class=\"cat-{}\" points=\"{}\" fill=\"{}\" stroke=\"none\"/>\n",
                     category_name(static_cast<Category>(c)), pts, kColours[c]);
  }
  // Axes and ticks.
  s += fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#333\"/>\n", left, top + ph,
                   left + pw, top + ph);
  s += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#333\"/>\n", left, top, left, top + ph);
  const double ystep = tick_step(ymax / unit.scale, 6);
  for (int i = 0; i <= 100 && i * ystep * unit.scale <= ymax; ++i) {  // bounded: ~6 ticks
    const double v = i * ystep;
    s += fmt::format(
        "<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1f}\" "
        "text-anchor=\"end\">{:g}</text>\n",
        left, y(v * unit.scale), left + pw, y(v * unit.scale), left - 6, y(v * unit.scale) + 4, v);
  }
  const double xstep = tick_step(tmax, 8);
  for (int i = 0; i <= 100 && i * xstep <= tmax; ++i) {  // bounded: ~8 ticks
    const double v = i * xstep;
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{:g}</text>\n", x(v), top + ph + 16, v);
  }
  s += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">time in the step (ms)</text>\n", left + pw / 2,
                   height - 10);
  s += fmt::format(
      "<text x=\"16\" y=\"{:.1f}\" transform=\"rotate(-90 16 {:.1f})\" text-anchor=\"middle\">allocated ({})</text>\n",
      top + ph / 2, top + ph / 2, unit.name);
  // Predicted peak (dashed) and the measured peak (marker + label).
  s += fmt::format(
      "<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#000\" stroke-dasharray=\"6 4\"/>"
      "<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">estimator's peak {}</text>\n",
      left, y(predicted), left + pw, y(predicted), left + pw - 4, y(predicted) - 5, fmt_bytes(predicted));
  const double px = x(num(peak, "t_ms", "memory.peak")), py = y(num(peak, "total", "memory.peak"));
  s += fmt::format(
      "<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"5\" fill=\"#000\"/><text x=\"{:.1f}\" y=\"{:.1f}\" "
      "font-weight=\"bold\">measured peak {}</text>\n",
      px, py, std::min(px + 8, left + pw - 160), py - 8, fmt_bytes(num(peak, "total", "memory.peak")));
  // Legend with the breakdown at the peak.
  const nlohmann::json& breakdown = field(peak, "breakdown", "memory.peak");
  int ly = top + 10;
  s += fmt::format("<text x=\"{:.1f}\" y=\"{}\" font-weight=\"bold\">at the peak</text>\n", left + pw + 16, ly);
  for (int c = kNumCategories - 1; c >= 0; --c) {
    ly += 22;
    const char* name = category_name(static_cast<Category>(c));
    s += fmt::format(
        "<rect x=\"{:.1f}\" y=\"{}\" width=\"14\" height=\"14\" fill=\"{}\"/><text x=\"{:.1f}\" y=\"{}\">{} "
        "{}</text>\n",
        left + pw + 16, ly - 11, kColours[c], left + pw + 36, ly, name, fmt_bytes(num(breakdown, name, "breakdown")));
  }
  if (peak.contains("largest")) {
    ly += 30;
    s += fmt::format("<text x=\"{:.1f}\" y=\"{}\" font-weight=\"bold\">largest live tensors</text>\n", left + pw + 16,
                     ly);
    int shown = 0;
    for (const nlohmann::json& tnsr : peak["largest"]) {
      if (++shown > 8) break;
      ly += 17;
      std::string name = field(tnsr, "name", "largest").get<std::string>();
      if (name.size() > 26) name = name.substr(0, 12) + "…" + name.substr(name.size() - 12);
      s += fmt::format("<text x=\"{:.1f}\" y=\"{}\" font-size=\"11\">{} {}</text>\n", left + pw + 16, ly, esc(name),
                       fmt_bytes(num(tnsr, "bytes", "largest")));
    }
  }
  s += "</svg>\n";
  return s;
}

std::string ops_svg(const nlohmann::json& ops) {
  struct Row {
    std::string label;
    double ms, gflops;
  };
  std::vector<Row> rows;
  for (const nlohmann::json& o : ops) {
    const double ms = num(o, "ms", "ops[]");
    const double gflop = num(o, "gflop", "ops[]");
    rows.push_back({field(o, "op", "ops[]").get<std::string>() + " · " + field(o, "phase", "ops[]").get<std::string>(),
                    ms, ms > 0 ? gflop / (ms * 1e-3) : 0.0});
  }
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.ms > b.ms; });
  if (rows.size() > 20) rows.resize(20);
  const int left = 220, bar_h = 18, gap = 6, width = 1200, top = 36;
  const int height = top + static_cast<int>(rows.size()) * (bar_h + gap) + 40;
  double max_ms = 1e-9;
  for (const Row& r : rows) max_ms = std::max(max_ms, r.ms);
  const double pw = width - left - 260;
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n"
      "<text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">Where time goes: ms per step by op × "
      "phase (bar), GFLOP/s (label)</text>\n",
      width, height, width, height);
  int yy = top;
  for (const Row& r : rows) {
    const double w = pw * r.ms / max_ms;
    s += fmt::format(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text><rect class=\"op-bar\" x=\"{}\" y=\"{}\" "
        "width=\"{:.1f}\" "
        "height=\"{}\" fill=\"#9c755f\"/><text x=\"{:.1f}\" y=\"{}\">{:.2f} ms · {:.1f} GFLOP/s</text>\n",
        left - 8, yy + 13, esc(r.label), left, yy, std::max(1.0, w), bar_h, left + w + 6, yy + 13, r.ms, r.gflops);
    yy += bar_h + gap;
  }
  s += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">ms per step</text>\n</svg>\n", left + pw / 2,
                   height - 10);
  return s;
}

std::string roofline_svg(const nlohmann::json& ops, const nlohmann::json& roof) {
  const double mm = num(roof, "matmul_gflops", "roofline"), fma = num(roof, "fma_gflops", "roofline"),
               bw = num(roof, "bandwidth_gbs", "roofline");
  const int width = 1200, height = 460, left = 80, right = 260, top = 40, bottom = 50;
  const double pw = width - left - right, ph = height - top - bottom;
  const double xlo = 0.01, xhi = 1000.0, ylo = 0.1, yhi = std::max(mm, fma) * 3;
  auto x = [&](double ai) {
    return left + pw * (std::log10(std::clamp(ai, xlo, xhi)) - std::log10(xlo)) / (std::log10(xhi) - std::log10(xlo));
  };
  auto y = [&](double g) {
    return top +
           ph * (1 - (std::log10(std::clamp(g, ylo, yhi)) - std::log10(ylo)) / (std::log10(yhi) - std::log10(ylo)));
  };
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n"
      "<text x=\"{}\" y=\"22\" font-size=\"15\" font-weight=\"bold\">Roofline of this CPU (measured): ops "
      "as points</text>\n",
      width, height, width, height, left);
  for (double d = std::log10(xlo); d <= std::log10(xhi) + 1e-9; d += 1) {
    s += fmt::format(
        "<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" stroke=\"#eee\"/><text x=\"{0:.1f}\" "
        "y=\"{3:.1f}\" "
        "text-anchor=\"middle\">{4:g}</text>\n",
        x(std::pow(10, d)), top, top + ph, top + ph + 16, std::pow(10, d));
  }
  for (double d = std::floor(std::log10(ylo)); d <= std::log10(yhi); d += 1) {
    if (std::pow(10, d) < ylo) continue;
    s += fmt::format(
        "<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2:.1f}\" y2=\"{1:.1f}\" stroke=\"#eee\"/><text x=\"{3}\" y=\"{4:.1f}\" "
        "text-anchor=\"end\">{5:g}</text>\n",
        left, y(std::pow(10, d)), left + pw, left - 6, y(std::pow(10, d)) + 4, std::pow(10, d));
  }
  // Roofs: min(peak, bandwidth · intensity), for the matmul and the elementwise peak.
  for (const auto& [peak, colour, label] :
       {std::tuple{mm, "#333", "matmul (oneDNN probe)"}, std::tuple{fma, "#999", "FMA peak"}}) {
    std::string pts;
    for (double d = std::log10(xlo); d <= std::log10(xhi) + 1e-9; d += 0.05) {
      const double ai = std::pow(10, d);
      pts += fmt::format("{:.1f},{:.1f} ", x(ai), y(std::min(peak, bw * ai)));
    }
    s += fmt::format(
        "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/><text x=\"{:.1f}\" y=\"{:.1f}\" "
        "fill=\"{}\">{} {:.0f} GFLOP/s</text>\n",
        pts, colour, left + pw - 200, y(peak) - 5, colour, label, peak);
  }
  s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" fill=\"#666\">memory {:.1f} GB/s</text>\n", x(0.02),
                   y(bw * 0.02) - 6, bw);
  int legend = top + 10;
  for (const nlohmann::json& o : ops) {
    const double gflop = num(o, "gflop", "ops[]"), gbytes = num(o, "gbytes", "ops[]"), ms = num(o, "ms", "ops[]");
    if (gflop <= 0 || gbytes <= 0 || ms <= 0) continue;
    const std::string phase = field(o, "phase", "ops[]").get<std::string>();
    const char* colour = phase == "forward"     ? "#4e79a7"
                         : phase == "backward"  ? "#e15759"
                         : phase == "recompute" ? "#b07aa1"
                                                : "#59a14f";
    const double cx = x(gflop / gbytes), cy = y(gflop / (ms * 1e-3));
    s += fmt::format(
        "<circle class=\"op-point\" cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"6\" fill=\"{}\" fill-opacity=\"0.8\"/>"
        "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"10\">{}</text>\n",
        cx, cy, colour, cx + 8, cy + 3, esc(field(o, "op", "ops[]").get<std::string>()));
    (void)legend;
  }
  for (const auto& [phase, colour] : {std::pair{"forward", "#4e79a7"}, std::pair{"backward", "#e15759"},
                                      std::pair{"recompute", "#b07aa1"}, std::pair{"optimizer", "#59a14f"}}) {
    legend += 20;
    s += fmt::format("<circle cx=\"{:.1f}\" cy=\"{}\" r=\"6\" fill=\"{}\"/><text x=\"{:.1f}\" y=\"{}\">{}</text>\n",
                     left + pw + 22, legend - 4, colour, left + pw + 34, legend, phase);
  }
  s += fmt::format(
      "<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">arithmetic intensity (FLOP per byte moved)</text>\n"
      "<text x=\"16\" y=\"{:.1f}\" transform=\"rotate(-90 16 {:.1f})\" text-anchor=\"middle\">GFLOP/s</text>\n</svg>\n",
      left + pw / 2, height - 10, top + ph / 2, top + ph / 2);
  return s;
}

std::string draw_report_html(const nlohmann::json& report) {
  const std::string title = field(report, "title", "report").get<std::string>();
  const nlohmann::json& mem = field(report, "memory", "report");
  std::string machine = field(report, "machine", "report").get<std::string>();
  if (machine.rfind("machine: ", 0) == 0) machine = machine.substr(9);
  std::string h = fmt::format(
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{0}</title>\n"
      "<style>body{{font-family:sans-serif;margin:24px;max-width:1240px;color:#222}} "
      "table{{border-collapse:collapse;margin:8px 0 20px}} "
      "td,th{{border:1px solid #ccc;padding:4px 10px}} td.n{{text-align:right;font-variant-numeric:tabular-nums}} "
      "code{{background:#f4f4f4;padding:1px 4px}} h2{{margin-top:32px}}</style></head><body>\n<h1>{0}</h1>\n"
      "<p><b>config</b> <code>{1}</code><br><b>machine</b> <code>{2}</code><br><b>steady step</b> {3:.2f} ms, {4:.1f} "
      "tokens/s</p>\n",
      esc(title), esc(field(report, "config", "report").get<std::string>()), esc(machine),
      num(report, "ms_per_step", "report"), num(report, "tokens_per_second", "report"));
  h += "<h2>Memory over one steady step</h2>\n" + draw_memory_svg(report, 1200, 440);
  // The reconciliation at the peak.
  const nlohmann::json& measured = field(field(mem, "peak", "memory"), "breakdown", "memory.peak");
  const nlohmann::json& predicted = field(mem, "predicted_breakdown", "memory");
  h += "<h2>Reconciliation at the peak: measured (allocator) vs analytic "
       "(estimators/memory)</h2>\n<table><tr><th>category</th>"
       "<th>measured (B)</th><th>analytic (B)</th><th>diff</th></tr>\n";
  double sum_m = 0, sum_p = 0;
  for (int c = 0; c < kNumCategories; ++c) {
    const char* name = category_name(static_cast<Category>(c));
    const double m = num(measured, name, "breakdown"), p = num(predicted, name, "predicted_breakdown");
    sum_m += m, sum_p += p;
    h += fmt::format(
        "<tr><td>{}</td><td class=\"n\">{:.0f}</td><td class=\"n\">{:.0f}</td><td class=\"n\">{:+.0f}</td></tr>\n",
        name, m, p, m - p);
  }
  h += fmt::format(
      "<tr><td><b>total</b></td><td class=\"n\"><b>{:.0f}</b></td><td class=\"n\"><b>{:.0f}</b></td><td "
      "class=\"n\"><b>{:+.0f}</b></td>"
      "</tr></table>\n",
      sum_m, sum_p, sum_m - sum_p);
  const nlohmann::json& ops = field(report, "ops", "report");
  h += "<h2>Where time goes</h2>\n" + ops_svg(ops);
  h += "<h2>Roofline</h2>\n" + roofline_svg(ops, field(report, "roofline", "report"));
  h += "<h2>Per op × phase, one step: FLOPs measured (counters) vs analytic "
       "(estimators/flops)</h2>\n<table><tr><th>op</th>"
       "<th>phase</th><th>ms</th><th>FLOPs measured</th><th>FLOPs analytic</th><th>diff</th><th>GB moved</th>"
       "<th>GFLOP/s</th></tr>\n";
  for (const nlohmann::json& o : ops) {
    const double ms = num(o, "ms", "ops[]"), gflop = num(o, "gflop", "ops[]");
    const double measured_flops = num(o, "flops", "ops[]"), analytic_flops = num(o, "analytic_flops", "ops[]");
    h += fmt::format(
        "<tr><td>{}</td><td>{}</td><td class=\"n\">{:.3f}</td><td class=\"n\">{:.0f}</td><td class=\"n\">{:.0f}</td>"
        "<td class=\"n\">{:+.0f}</td><td class=\"n\">{:.4f}</td><td class=\"n\">{:.1f}</td></tr>\n",
        esc(field(o, "op", "ops[]").get<std::string>()), esc(field(o, "phase", "ops[]").get<std::string>()), ms,
        measured_flops, analytic_flops, measured_flops - analytic_flops, num(o, "gbytes", "ops[]"),
        ms > 0 ? gflop / (ms * 1e-3) : 0.0);
  }
  h += "</table>\n<p>Made by <code>reckon</code>. Memory: the tracking allocator's timeline of the last step; "
       "analytic: the "
       "estimator's replay of the same step. Ops: the counters of the measured steps, per step.</p>\n</body></html>\n";
  return h;
}

}  // namespace

std::string memory_svg(const nlohmann::json& report, int width, int height) {
  return draw_memory_svg(checked_report(report), width, height);
}

std::string report_html(const nlohmann::json& report) { return draw_report_html(checked_report(report)); }

std::string report_html_from_text(const std::string& text, const std::string& what) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(fmt::format("report: '{}' is not JSON ({})", what, e.what()));
  }
  if (!j.is_object() || !j.contains("report") || !j["report"].is_object()) {
    throw std::invalid_argument(
        fmt::format("report: '{}' has no \"report\" object (write it with reckon train --json)", what));
  }
  return report_html(j["report"]);
}

int run_report(const std::string& json_path, const std::string& html_path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(json_path, ec))
    throw std::invalid_argument(fmt::format("report: '{}' is not a regular file", json_path));
  const auto size = std::filesystem::file_size(json_path, ec);
  if (ec || size > (uintmax_t{256} << 20))
    throw std::invalid_argument(fmt::format("report: '{}' is above 256 MiB", json_path));
  check_output_path("--output", html_path);
  std::ifstream in(json_path, std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string html = report_html_from_text(text, json_path);
  write_output_file("--output", html_path, html);
  fmt::print("wrote {}\n", html_path);
  return 0;
}

}  // namespace reckon
