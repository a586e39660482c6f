// `reckon extrapolate`: no blind fit. (1) the analytic counts, validated against measured scaled-down runs;
// (2) the roofline step-time model on this CPU (measured matmul rate and bandwidth) vs measured step time on
// S and M, with the error; (3) the same model applied to the target (default GPT-2 XL on an A100).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace reckon {

struct ExtrapolateOptions {
  std::vector<std::string> validate = {"S", "M"};  // presets measured on this machine
  int64_t steps = 3;                               // measured steady-state steps per preset (median)
  std::string target = "gpt2-xl";
  std::string target_hf_config;  // --hf-config: the target from a Hugging Face config.json instead of a preset
  int64_t target_batch = 8;
  std::string gpu = "a100-80gb";
  // Training precision of the validated presets and the target: fp32, tf32 (fp32 at the TF32 peak), amp-bf16,
  // bf16. The GPU peak follows it (tf32 → TF32, amp-bf16 and bf16 → BF16).
  std::string precision = "tf32";
  // `key=value` config overrides applied to the validated presets and the target alike (attention=flash,
  // recompute=full, …); shape fields change the presets too.
  std::vector<std::string> overrides;
  int64_t train_steps = 400000;
  int64_t train_batch = 1024;
  std::string json_path;
  std::string max_memory;  // budget for each measured step; default: available RAM
};

int run_extrapolate(const ExtrapolateOptions& options);

}  // namespace reckon
