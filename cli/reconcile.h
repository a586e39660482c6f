// `reckon reconcile`: run real training steps, then measured (allocator + counters) vs analytic (estimators)
// per category and per op × phase. Exit 0 only if every byte and FLOP difference is 0.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace reckon {

struct ReconcileOptions {
  std::string preset = "tiny";
  std::string config_file;
  std::string hf_config;  // a Hugging Face config.json (cli/config_source.h)
  std::vector<std::string> overrides;
  bool sweep = false;  // ≥ 50 configs: both ffn kinds, tied/untied, positions, odd B, T, D, H, L, V
  std::string json_path;
  bool quiet = false;      // sweep: only failures and the summary
  std::string max_memory;  // budget for each measured step; default: available RAM
  int64_t zero_stage = 0;  // --zero S: the config field zero_stage
  bool zero_given = false;
};

int run_reconcile(const ReconcileOptions& options);

}  // namespace reckon
