// A seeded random fuzzer of `reckon report`'s input (report_html_from_text: nlohmann's parser, the field-by-field
// check, the thinning of the timeline, then every drawing loop). Every input must render or be refused with
// std::invalid_argument: no other exception, no crash, no sanitizer report, and no input may take more than 5 s
// (120 s under the sanitizers; the loops once ran forever on an infinite axis maximum). Inputs are a small real report
// with its values replaced at random (extreme and non-finite-looking numbers, wrong types, deleted keys, arrays
// repeated up to 10^5 entries), then, in a quarter of them, mutated as text (byte flips, JSON tokens, deletions, long
// repetitions).
//
//   build/fuzz_report                 # the short pass ctest runs (3,000 inputs)
//   build/fuzz_report 100000 7        # a longer run: 10^5 inputs from seed 7 (use the sanitizer build)
// A failure prints its seed and input index; rerun with that seed to reproduce.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <iterator>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tests/fuzz_main.h"

#include "cli/html_report.h"

namespace {

// A tiny run's report as `reckon train --json` writes it (6 timeline points, 2 phases, 3 ops).
const char* const kSeed = R"json({"report": {"config": "V 256, T 32", "machine": "machine: x", "memory": {"bytes":
{"activation": [1024, 33792, 66560, 67072, 99840, 99840], "gradient": [656640, 656640, 656640, 656640, 656640, 656640],
"optimizer_state": [1313280, 1313280, 1313280, 1313280, 1313280, 1313280], "parameter": [656640, 656640, 656640, 656640,
656640, 656640], "temporary": [0, 0, 0, 0, 0, 34048]}, "peak": {"breakdown": {"activation": 1641984, "gradient": 656640,
"optimizer_state": 1313280, "parameter": 656640, "temporary": 165120}, "largest": [{"bytes": 132352, "category":
"temporary", "name": "onednn.scratchpad.lm_head"}, {"bytes": 131072, "category": "activation", "name":
"layers.0.ffn.gated"}], "t_ms": 1.512, "total": 4433664}, "phases": [{"end_ms": 0.047, "phase": "optimizer",
"start_ms": 0.0}, {"end_ms": 1.426, "phase": "forward", "start_ms": 0.06}], "predicted_breakdown": {"activation":
1641984, "gradient": 656640, "optimizer_state": 1313280, "parameter": 656640, "temporary": 165120}, "predicted_peak":
4433664, "t_ms": [0.0, 0.057, 0.075, 0.076, 0.09, 0.111]}, "ms_per_step": 3.444, "ops": [{"analytic_flops": 2214400,
"flops": 2214400, "gbytes": 0.0007, "gflop": 0.0022, "ms": 0.253, "op": "attention", "phase": "forward"},
{"analytic_flops": 164353, "flops": 164353, "gbytes": 0.0003, "gflop": 0.0002, "ms": 0.0554, "op": "cross_entropy",
"phase": "forward"}, {"analytic_flops": 0, "flops": 0, "gbytes": 0.0001, "gflop": 0.0, "ms": 0.0072, "op": "embedding",
"phase": "forward"}], "roofline": {"bandwidth_gbs": 29.8, "fma_gflops": 271.3, "matmul_gflops": 172.0}, "title":
"reckon train: tiny [2 steps]", "tokens_per_second": 37170.4}})json";

const std::vector<std::string> kTokens =
    testing_ref::json_tokens({"1e308", "1.7e308", "6e307", "-1e308", "9223372036854775808", "1e-320", "-1", "0", "0.5",
                              "\"x\"", "\xff", "\n", " ", "NaN", "<b>&"});

nlohmann::json extreme_value(std::mt19937_64& rng) {
  static const std::vector<nlohmann::json> values = {0,
                                                     -1,
                                                     1e308,
                                                     1.7e308,
                                                     6e307,
                                                     -1e308,
                                                     4.9e-324,
                                                     1e-300,
                                                     9007199254740993.0,
                                                     1e12,
                                                     1e9,
                                                     1e16,
                                                     "str",
                                                     true,
                                                     nullptr,
                                                     nlohmann::json::array(),
                                                     nlohmann::json::object(),
                                                     std::string(5000, 'x'),
                                                     "<script>",
                                                     std::numeric_limits<int64_t>::max(),
                                                     std::numeric_limits<uint64_t>::max()};
  return values[rng() % values.size()];
}

// One structural edit at a random place of the tree: replace a value, delete a key, or repeat an array.
void mutate_tree(std::mt19937_64& rng, nlohmann::json& j, int depth = 0) {
  if (j.is_object() && !j.empty() && (depth < 2 || rng() % 16 != 0)) {
    auto it = j.begin();
    std::advance(it, static_cast<long>(rng() % j.size()));
    if (rng() % 24 == 0) {
      j.erase(it);
    } else {
      mutate_tree(rng, *it, depth + 1);
    }
    return;
  }
  if (j.is_array() && !j.empty() && rng() % 8 != 0) {
    if (rng() % 4 == 0) {  // repeat: a long timeline or thousands of ops
      const size_t n = rng() % 16 != 0 ? 1 + rng() % 2000 : 1 + rng() % 100000;
      const nlohmann::json first = j[0];
      for (size_t i = 0; i < n; ++i) j.push_back(first);
    } else {
      mutate_tree(rng, j[rng() % j.size()], depth + 1);
    }
    return;
  }
  // Mostly values in range at its edges (so the page is drawn at extreme scales), else anything.
  static const std::vector<double> edges = {0, 1e-300, 4.9e-324, 1, 1e6, 1e9, 1e12, 9007199254740992.0};
  static const std::vector<std::string> texts = {"",
                                                 "<script>alert(1)</script>",
                                                 "a&b\"c'",
                                                 std::string(4096, 'y'),
                                                 "\xc3\xa9\xe2\x80\x94",
                                                 "forward",
                                                 "backward",
                                                 "recompute"};
  if (j.is_number() && rng() % 2 == 0) {
    j = edges[rng() % edges.size()];
  } else if (j.is_string() && rng() % 2 == 0) {
    j = texts[rng() % texts.size()];
  } else {
    j = extreme_value(rng);
  }
}

std::string make_input(std::mt19937_64& rng) {
  nlohmann::json j = nlohmann::json::parse(kSeed);
  const int edits = 1 + static_cast<int>(rng() % 3);
  for (int e = 0; e < edits; ++e) mutate_tree(rng, j);
  std::string text = j.dump();
  if (rng() % 4 == 0) {
    text = testing_ref::mutate_text(rng, std::move(text), kTokens, 6, 0, [](std::mt19937_64&, std::string&, int) {});
  }
  return text;
}

// A hang, not a slow input: the sanitizers make JSON parsing some 50× slower (a 5 MB input: 0.16 s in Release).
#if defined(__SANITIZE_ADDRESS__)
constexpr double kHangSeconds = 120.0;
#else
constexpr double kHangSeconds = 5.0;
#endif
double g_slowest = 0;

}  // namespace

int main(int argc, char** argv) {
  const int rc = testing_ref::run_fuzzer(
      "fuzz_report", argc, argv, 3000, 20261203ULL, "rendered", make_input, [](const std::string& input) {
        const auto t0 = std::chrono::steady_clock::now();
        const auto check_time = [&] {  // refused or rendered, never slow
          const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          g_slowest = std::max(g_slowest, s);
          if (s > kHangSeconds) throw std::runtime_error(fmt::format("took {:.1f} s: a hang", s));
        };
        try {
          reckon::report_html_from_text(input, "fuzz.json");
        } catch (const std::invalid_argument&) {
          check_time();
          throw;
        }
        check_time();
      });
  std::printf("fuzz_report: the slowest input took %.2f s (a hang: over %.0f s)\n", g_slowest, kHangSeconds);
  return rc;
}
