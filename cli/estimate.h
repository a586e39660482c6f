// `reckon estimate`: the seeds' questions answered from the config alone, each with its convention printed
// beside it: parameters, memory by category, memory = a·B + b, max batch in a budget, AdamW FLOPs and bytes,
// FLOPs per step, training days on a GPU. Instant: nothing model-sized is allocated.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cli/estimate_cluster.h"

namespace reckon {

struct EstimateOptions {
  std::string preset = "gpt2-xl";
  std::string config_file;
  std::vector<std::string> overrides;
  int64_t batch_size = 0;  // 0: the config's
  std::string memory_budget = "80GB";
  std::string gpu = "a100-80gb";
  // Training precision: fp32, tf32 (fp32 training at the GPU's TF32 peak), amp-bf16, bf16; empty = the config's.
  // The GPU peak follows it: fp32 → FP32, tf32 → TF32, amp-bf16 and bf16 → BF16.
  std::string precision;
  double mfu = 0.5;
  int64_t train_steps = 400000;
  int64_t train_batch = 1024;
  std::string activations = "implemented";  // or "textbook"
  std::string json_path;
  bool query_scratchpad = true;
  ClusterOptions cluster;        // --gpus N (> 0): the data-parallel section
  int64_t zero_stage = 0;        // --zero S: the config field zero_stage (the stage in bold)
  bool zero_given = false;  // ask oneDNN for its scratchpad sizes (false: arithmetic only, no oneDNN)
};

// The report `reckon estimate` prints (markdown text) and its JSON, computed whole before anything is printed
// or written. Throws std::invalid_argument naming the flag or field for any input outside its range,
// including a config whose counts do not fit int64 (see estimators/fit.h).
struct EstimateReport {
  std::string text;
  std::string json;
};
EstimateReport make_estimate_report(const EstimateOptions& options);

// Prints the report; with --json, writes the JSON first (atomically).
int run_estimate(const EstimateOptions& options);

}  // namespace reckon
