// The HTML report of a training run (`reckon train --report run.html`, `reckon report run.json -o run.html`)
// and its memory picture (`--plot-memory FILE.svg`): one self-contained file, inline SVG, no scripts, no
// network. Everything is drawn from the run's "report" JSON (report_json), so a saved --json renders the same
// page later.
//   - memory over one steady step: a stacked area per category (the allocator's timeline), phases shaded,
//     the peak marked with its breakdown and the largest live tensors, the estimator's predicted peak beside it;
//   - where time goes: per op × phase bars (ms, GFLOP/s), and a roofline of this CPU with the ops as points;
//   - the reconciliation at the peak (measured vs analytic per category, diff column), config, machine line.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "runtime/allocator.h"
#include "runtime/counters.h"

namespace reckon {

// The timeline of one step as plot data: `events` are the step's allocator events, `base` the bytes per category
// live when it began; `op_events` the counters' op events of the step (phase spans). At most `max_points`
// points, always keeping the peak.
constexpr size_t kMaxTimelinePoints = 1500;
nlohmann::json memory_timeline_json(const std::vector<MemoryEvent>& events,
                                    const std::array<int64_t, kNumCategories>& base,
                                    const std::vector<OpEvent>& op_events, int64_t max_points = kMaxTimelinePoints);

// The SVG of the memory timeline (report["memory"]), width × height pixels.
std::string memory_svg(const nlohmann::json& report, int width = 1200, int height = 440);
// The whole page. The report is input (a saved file): every field drawn is checked first — its type, finite, in
// its range (bytes ≤ 2^53, times ≤ 10^9 ms, rates ≤ 10^12, at most 10,000 ops / phases / tensors, strings ≤ 4 KiB),
// the timeline's times non-decreasing — and the timeline thinned to kMaxTimelinePoints (the peak kept), so every
// drawing loop is bounded. Throws std::invalid_argument naming the key (report.memory.t_ms[3], ops[2].ms).
std::string report_html(const nlohmann::json& report);
// report_html of a `train --json` file's text; `what` names it in messages.
std::string report_html_from_text(const std::string& text, const std::string& what);
// `reckon report RUN.json -o RUN.html`: reads the JSON (a regular file of at most 256 MiB), renders its "report",
// writes the page atomically. Bad input: std::invalid_argument naming the file or the field (exit 2).
int run_report(const std::string& json_path, const std::string& html_path);

}  // namespace reckon
