// `reckon estimate`: the seeds' questions answered from the config alone, each with its convention printed
// beside it: parameters, memory by category, memory = a·B + b, max batch in a budget, AdamW FLOPs and bytes,
// FLOPs per step, training days on a GPU. Instant: nothing model-sized is allocated.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <optional>

#include <nlohmann/json.hpp>

#include "cli/estimate_cluster.h"
#include "estimators/flops.h"
#include "estimators/memory.h"
#include "estimators/textbook.h"
#include "estimators/gpu_step.h"
#include "estimators/time.h"
#include "model/config.h"

namespace reckon {

struct EstimateOptions {
  std::string preset = "gpt2-xl";
  std::string config_file;
  std::string hf_config;  // a Hugging Face config.json (cli/config_source.h)
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
  ClusterOptions cluster;   // --gpus N (> 0): the data-parallel section
  int64_t zero_stage = 0;   // --zero S: the config field zero_stage (the stage in bold)
  bool zero_given = false;  // ask oneDNN for its scratchpad sizes (false: arithmetic only, no oneDNN)
};

// Every figure of the report, computed once (compute_estimate); the markdown and the JSON are both rendered from
// these values. Rows that a config cannot have (a count beyond int64, a variant not built) carry `unavailable`.
struct EstimateResult {
  TrainConfig config;
  std::string gpu_math;  // the GPU peak's column: fp32, tf32, bf16
  GpuSpec gpu;
  double peak_flops = 0;
  bool textbook = false;
  ParameterStateLayout state{};  // bytes per parameter of this precision

  struct ParameterRow {
    std::string item, formula;
    int64_t count;
  };
  std::vector<ParameterRow> parameters;
  int64_t num_parameters = 0;
  int64_t published_parameters = 0;  // the released model's count, for presets of released models (0: none)
  // A preset of the same name in the other convention (the accounting problem's gpt2-* vs the released openai-gpt2*):
  // its name and the parameter counts of both, by kind of parameter.
  struct CounterpartRow {
    std::string item;
    int64_t ours, theirs;
  };
  std::string counterpart;
  std::vector<CounterpartRow> counterpart_rows;

  struct Memory {
    int64_t parameter = 0, gradient = 0, optimizer_state = 0, activation = 0, temporary = 0, total = 0;
    std::string peak_moment;
    int64_t per_sample = 0, fixed = 0;  // memory(B) = per_sample·B + fixed
    LinearMemory fit;                   // as implemented (exact at the batches checked)
    int64_t replayed_peak = 0;          // at the config's batch size
    int64_t budget = 0, max_batch = 0;
    std::string gib_budget;  // "80GiB" when the budget was given in GB; then its max batch
    int64_t gib_budget_bytes = 0, gib_max_batch = -1;
    bool scratchpad_queried = false;
    int64_t scratchpad_at_peak = 0, scratchpad_max = 0, peak_with_scratchpad = 0;
    std::string scratchpad_not_queried;  // why, when it could not be asked
  } memory;

  struct PrecisionRow {
    ParameterStateLayout layout{};
    const char* gpu_math = "";
    std::string unavailable;
    int64_t peak = 0, per_sample = 0, fixed = 0, max_batch = 0;
    double days = 0;
  };
  std::vector<PrecisionRow> precisions;

  struct VariantRow {
    Precision precision = Precision::fp32;
    GradDType grad_dtype = GradDType::automatic;
    AttentionKind attention = AttentionKind::naive;
    Recompute recompute = Recompute::none;
    bool is_config = false;
    std::string unavailable;
    int64_t per_sample = 0, fixed = 0, max_batch = 0;
    double executed_over_model = 0, days_at_mfu = 0, days_at_hfu = 0;
    nlohmann::json model_causal, model_full, hardware, step_flops;  // exact integers where they fit int64
  };
  std::vector<VariantRow> matrix;

  std::vector<ActivationRow> activations;

  struct Flops {
    StepFlops step;
    int64_t tokens = 0;
    std::string unavailable;  // the model-FLOP rows, when a count does not fit int64
    double model_causal = 0, model_full = 0, hardware = 0;
    nlohmann::json model_causal_exact, model_full_exact;
    OpCount adamw_per_parameter;
  } flops;

  struct Training {
    TrainingTime executed;
    bool has_model = false;
    TrainingTime model_causal, model_full;
    double hfu_needed = 0;
    double train_step_flops = 0;  // at the training batch
  } training;

  std::optional<ClusterReport> cluster;

  GpuStep gpu_step;           // the step predicted op by op on the GPU (estimators/gpu_step.h)
  int64_t gpu_ranks = 1;      // the GPUs it is data parallel over (--gpus, else 1)
  double predicted_days = 0;  // the training run (train_steps × train_batch × T tokens) at the predicted rate
};
// Checks every input first (one message naming the flag or field and its range; nothing computed after it).
EstimateResult compute_estimate(const EstimateOptions& options);
std::string render_markdown(const EstimateResult& result, const EstimateOptions& options);
nlohmann::json render_json(const EstimateResult& result, const EstimateOptions& options);

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
